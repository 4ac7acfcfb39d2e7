BEGIN;

CREATE SCHEMA IF NOT EXISTS "mlmanager";

SET search_path TO "mlmanager", public;

CREATE TABLE mlmanager.mlmanager_alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT mlmanager_alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001_initial

CREATE TABLE handlers (
    name VARCHAR(64) NOT NULL, 
    enabled BOOLEAN DEFAULT true NOT NULL, 
    description TEXT NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    updated_by VARCHAR(255), 
    CONSTRAINT pk_handlers PRIMARY KEY (name)
);

CREATE TABLE jobs (
    id BIGSERIAL NOT NULL, 
    handler_name VARCHAR(64) NOT NULL, 
    status VARCHAR(16) NOT NULL, 
    username VARCHAR(255) NOT NULL, 
    payload JSONB NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    run_after TIMESTAMP WITH TIME ZONE NOT NULL, 
    started_at TIMESTAMP WITH TIME ZONE, 
    finished_at TIMESTAMP WITH TIME ZONE, 
    attempt INTEGER NOT NULL, 
    max_attempts INTEGER NOT NULL, 
    worker_id VARCHAR(128), 
    lease_expires_at TIMESTAMP WITH TIME ZONE, 
    cancel_requested BOOLEAN DEFAULT false NOT NULL, 
    error TEXT, 
    unique_key VARCHAR(255), 
    CONSTRAINT pk_jobs PRIMARY KEY (id), 
    CONSTRAINT ck_jobs_status CHECK (status IN ('PENDING', 'RUNNING', 'SUCCESS', 'FAILURE', 'CANCELLED')), 
    CONSTRAINT fk_jobs_handler_name_handlers FOREIGN KEY(handler_name) REFERENCES handlers (name), 
    CONSTRAINT uq_jobs_unique_key UNIQUE (unique_key)
);

CREATE INDEX ix_jobs_lease ON jobs (status, lease_expires_at);

CREATE INDEX ix_jobs_pending ON jobs (status, run_after, id);

CREATE INDEX ix_jobs_username_created_at ON jobs (username, created_at);

CREATE TABLE deployments (
    id BIGSERIAL NOT NULL, 
    target VARCHAR(32) NOT NULL, 
    name VARCHAR(255) NOT NULL, 
    status VARCHAR(16) NOT NULL, 
    model_uri VARCHAR(1024), 
    run_id VARCHAR(64), 
    details JSONB NOT NULL, 
    job_id BIGINT, 
    username VARCHAR(255) NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_deployments PRIMARY KEY (id), 
    CONSTRAINT ck_deployments_status CHECK (status IN ('PENDING', 'DEPLOYED', 'FAILED', 'DELETED')), 
    CONSTRAINT fk_deployments_job_id_jobs FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE SET NULL
);

CREATE INDEX ix_deployments_target_name ON deployments (target, name);

CREATE TABLE job_logs (
    id BIGSERIAL NOT NULL, 
    job_id BIGINT NOT NULL, 
    line INTEGER NOT NULL, 
    logged_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    level VARCHAR(16) NOT NULL, 
    message TEXT NOT NULL, 
    CONSTRAINT pk_job_logs PRIMARY KEY (id), 
    CONSTRAINT fk_job_logs_job_id_jobs FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE, 
    CONSTRAINT uq_job_logs_job_id_line UNIQUE (job_id, line)
);

INSERT INTO mlmanager.mlmanager_alembic_version (version_num) VALUES ('0001_initial') RETURNING mlmanager.mlmanager_alembic_version.version_num;

COMMIT;

