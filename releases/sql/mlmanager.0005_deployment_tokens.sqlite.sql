-- Running upgrade 0004_typed_deployments -> 0005_deployment_tokens

CREATE TABLE deployment_tokens (
    id INTEGER NOT NULL, 
    deployment_id INTEGER NOT NULL, 
    token_sha256 VARCHAR(64) NOT NULL, 
    created_at DATETIME NOT NULL, 
    revoked_at DATETIME, 
    CONSTRAINT pk_deployment_tokens PRIMARY KEY (id), 
    CONSTRAINT fk_deployment_tokens_deployment_id_deployments FOREIGN KEY(deployment_id) REFERENCES deployments (id) ON DELETE CASCADE, 
    CONSTRAINT uq_deployment_tokens_token_sha256 UNIQUE (token_sha256)
);

CREATE INDEX ix_deployment_tokens_deployment_id ON deployment_tokens (deployment_id);

UPDATE mlmanager_alembic_version SET version_num='0005_deployment_tokens' WHERE mlmanager_alembic_version.version_num = '0004_typed_deployments';

