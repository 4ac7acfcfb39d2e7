BEGIN;

CREATE SCHEMA IF NOT EXISTS "mlmanager";

SET search_path TO "mlmanager", public;

-- Running upgrade 0002_workers -> 0003_model_representations

CREATE TABLE model_representations (
    id BIGSERIAL NOT NULL, 
    format VARCHAR(16) NOT NULL, 
    payload BYTEA NOT NULL, 
    checksum VARCHAR(64) NOT NULL, 
    kind VARCHAR(32) NOT NULL, 
    method VARCHAR(32) NOT NULL, 
    flavor VARCHAR(64) NOT NULL, 
    inputs JSONB NOT NULL, 
    outputs JSONB NOT NULL, 
    classes JSONB NOT NULL, 
    model_uri VARCHAR(1024) NOT NULL, 
    run_id VARCHAR(64), 
    model_version VARCHAR(64), 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    created_by VARCHAR(255) NOT NULL, 
    CONSTRAINT pk_model_representations PRIMARY KEY (id)
);

UPDATE mlmanager.mlmanager_alembic_version SET version_num='0003_model_representations' WHERE mlmanager.mlmanager_alembic_version.version_num = '0002_workers';

COMMIT;

