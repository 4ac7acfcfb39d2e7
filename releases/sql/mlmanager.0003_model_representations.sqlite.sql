-- Running upgrade 0002_workers -> 0003_model_representations

CREATE TABLE model_representations (
    id INTEGER NOT NULL, 
    format VARCHAR(16) NOT NULL, 
    payload BLOB NOT NULL, 
    checksum VARCHAR(64) NOT NULL, 
    kind VARCHAR(32) NOT NULL, 
    method VARCHAR(32) NOT NULL, 
    flavor VARCHAR(64) NOT NULL, 
    inputs JSON NOT NULL, 
    outputs JSON NOT NULL, 
    classes JSON NOT NULL, 
    model_uri VARCHAR(1024) NOT NULL, 
    run_id VARCHAR(64), 
    model_version VARCHAR(64), 
    created_at DATETIME NOT NULL, 
    created_by VARCHAR(255) NOT NULL, 
    CONSTRAINT pk_model_representations PRIMARY KEY (id)
);

UPDATE mlmanager_alembic_version SET version_num='0003_model_representations' WHERE mlmanager_alembic_version.version_num = '0002_workers';

