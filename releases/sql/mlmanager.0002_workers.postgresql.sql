BEGIN;

CREATE SCHEMA IF NOT EXISTS "mlmanager";

SET search_path TO "mlmanager", public;

-- Running upgrade 0001_initial -> 0002_workers

CREATE TABLE workers (
    id VARCHAR(128) NOT NULL, 
    handlers JSONB NOT NULL, 
    started_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    last_seen_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_workers PRIMARY KEY (id)
);

CREATE INDEX ix_workers_last_seen_at ON workers (last_seen_at);

UPDATE mlmanager.mlmanager_alembic_version SET version_num='0002_workers' WHERE mlmanager.mlmanager_alembic_version.version_num = '0001_initial';

COMMIT;

