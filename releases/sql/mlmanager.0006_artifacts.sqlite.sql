-- Running upgrade 0005_deployment_tokens -> 0006_artifacts

CREATE TABLE artifact_files (
    path VARCHAR(1024) NOT NULL, 
    blob_id VARCHAR(32) NOT NULL, 
    size BIGINT NOT NULL, 
    sha256 VARCHAR(64) NOT NULL, 
    chunks INTEGER NOT NULL, 
    mtime DATETIME NOT NULL, 
    CONSTRAINT pk_artifact_files PRIMARY KEY (path), 
    CONSTRAINT uq_artifact_files_blob_id UNIQUE (blob_id)
);

CREATE TABLE artifact_chunks (
    blob_id VARCHAR(32) NOT NULL, 
    seq INTEGER NOT NULL, 
    data BLOB NOT NULL, 
    written_at DATETIME NOT NULL, 
    CONSTRAINT pk_artifact_chunks PRIMARY KEY (blob_id, seq)
);

CREATE INDEX ix_artifact_chunks_written_at ON artifact_chunks (written_at);

UPDATE mlmanager_alembic_version SET version_num='0006_artifacts' WHERE mlmanager_alembic_version.version_num = '0005_deployment_tokens';

