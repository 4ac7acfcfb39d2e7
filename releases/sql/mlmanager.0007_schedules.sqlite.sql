-- Running upgrade 0006_artifacts -> 0007_schedules

CREATE TABLE schedules (
    id INTEGER NOT NULL, 
    name VARCHAR(255) NOT NULL, 
    model_name VARCHAR(255) NOT NULL, 
    cron_exp VARCHAR(255) NOT NULL, 
    timezone VARCHAR(64) NOT NULL, 
    spec JSON NOT NULL, 
    paused BOOLEAN DEFAULT false NOT NULL, 
    next_fire_at DATETIME, 
    last_fired_at DATETIME, 
    last_job_id INTEGER, 
    last_outcome TEXT, 
    username VARCHAR(255) NOT NULL, 
    created_at DATETIME NOT NULL, 
    updated_at DATETIME NOT NULL, 
    CONSTRAINT pk_schedules PRIMARY KEY (id), 
    CONSTRAINT fk_schedules_last_job_id_jobs FOREIGN KEY(last_job_id) REFERENCES jobs (id) ON DELETE SET NULL, 
    CONSTRAINT uq_schedules_name UNIQUE (name)
);

CREATE INDEX ix_schedules_next_fire_at ON schedules (next_fire_at);

CREATE TABLE job_tokens (
    id INTEGER NOT NULL, 
    job_id INTEGER NOT NULL, 
    username VARCHAR(255) NOT NULL, 
    token_sha256 VARCHAR(64) NOT NULL, 
    created_at DATETIME NOT NULL, 
    revoked_at DATETIME, 
    CONSTRAINT pk_job_tokens PRIMARY KEY (id), 
    CONSTRAINT fk_job_tokens_job_id_jobs FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE, 
    CONSTRAINT uq_job_tokens_token_sha256 UNIQUE (token_sha256)
);

CREATE INDEX ix_job_tokens_job_id ON job_tokens (job_id);

UPDATE mlmanager_alembic_version SET version_num='0007_schedules' WHERE mlmanager_alembic_version.version_num = '0006_artifacts';

