BEGIN;

CREATE SCHEMA IF NOT EXISTS "mlmanager";

SET search_path TO "mlmanager", public;

-- Running upgrade 0006_artifacts -> 0007_schedules

CREATE TABLE schedules (
    id BIGSERIAL NOT NULL, 
    name VARCHAR(255) NOT NULL, 
    model_name VARCHAR(255) NOT NULL, 
    cron_exp VARCHAR(255) NOT NULL, 
    timezone VARCHAR(64) NOT NULL, 
    spec JSONB NOT NULL, 
    paused BOOLEAN DEFAULT false NOT NULL, 
    next_fire_at TIMESTAMP WITH TIME ZONE, 
    last_fired_at TIMESTAMP WITH TIME ZONE, 
    last_job_id BIGINT, 
    last_outcome TEXT, 
    username VARCHAR(255) NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_schedules PRIMARY KEY (id), 
    CONSTRAINT fk_schedules_last_job_id_jobs FOREIGN KEY(last_job_id) REFERENCES jobs (id) ON DELETE SET NULL, 
    CONSTRAINT uq_schedules_name UNIQUE (name)
);

CREATE INDEX ix_schedules_next_fire_at ON schedules (next_fire_at);

CREATE TABLE job_tokens (
    id BIGSERIAL NOT NULL, 
    job_id BIGINT NOT NULL, 
    username VARCHAR(255) NOT NULL, 
    token_sha256 VARCHAR(64) NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    revoked_at TIMESTAMP WITH TIME ZONE, 
    CONSTRAINT pk_job_tokens PRIMARY KEY (id), 
    CONSTRAINT fk_job_tokens_job_id_jobs FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE, 
    CONSTRAINT uq_job_tokens_token_sha256 UNIQUE (token_sha256)
);

CREATE INDEX ix_job_tokens_job_id ON job_tokens (job_id);

UPDATE mlmanager.mlmanager_alembic_version SET version_num='0007_schedules' WHERE mlmanager.mlmanager_alembic_version.version_num = '0006_artifacts';

COMMIT;

