-- Running upgrade 0005_deployment_tokens -> 0007_schedules

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

UPDATE mlmanager_alembic_version SET version_num='0007_schedules' WHERE mlmanager_alembic_version.version_num = '0005_deployment_tokens';

