-- Running upgrade 0001_initial -> 0002_workers

CREATE TABLE workers (
    id VARCHAR(128) NOT NULL, 
    handlers JSON NOT NULL, 
    started_at DATETIME NOT NULL, 
    last_seen_at DATETIME NOT NULL, 
    CONSTRAINT pk_workers PRIMARY KEY (id)
);

CREATE INDEX ix_workers_last_seen_at ON workers (last_seen_at);

UPDATE mlmanager_alembic_version SET version_num='0002_workers' WHERE mlmanager_alembic_version.version_num = '0001_initial';

