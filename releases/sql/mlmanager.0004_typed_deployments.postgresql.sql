BEGIN;

CREATE SCHEMA IF NOT EXISTS "mlmanager";

SET search_path TO "mlmanager", public;

-- Running upgrade 0003_model_representations -> 0004_typed_deployments

ALTER TABLE deployments RENAME COLUMN details TO spec;

ALTER TABLE deployments ADD COLUMN stats JSONB;

ALTER TABLE deployments ADD COLUMN undeployed_by_job BIGINT;

UPDATE deployments SET stats = (SELECT jsonb_object_agg(key, value) FROM jsonb_each(spec) WHERE key IN ('scoring_lag', 'scoring_errors', 'last_scoring_error')), undeployed_by_job = CAST(spec->>'undeployed_by_job' AS bigint), spec = spec - 'scoring_lag' - 'scoring_errors' - 'last_scoring_error' - 'undeployed_by_job';

UPDATE mlmanager.mlmanager_alembic_version SET version_num='0004_typed_deployments' WHERE mlmanager.mlmanager_alembic_version.version_num = '0003_model_representations';

COMMIT;

