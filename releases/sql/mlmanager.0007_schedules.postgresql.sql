BEGIN;

CREATE SCHEMA IF NOT EXISTS "mlmanager";

SET search_path TO "mlmanager", public;

-- Running upgrade 0005_deployment_tokens -> 0007_schedules

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

UPDATE mlmanager.mlmanager_alembic_version SET version_num='0007_schedules' WHERE mlmanager.mlmanager_alembic_version.version_num = '0005_deployment_tokens';

COMMIT;

