-- Running upgrade 0003_model_representations -> 0004_typed_deployments

ALTER TABLE deployments RENAME COLUMN details TO spec;

ALTER TABLE deployments ADD COLUMN stats JSON;

ALTER TABLE deployments ADD COLUMN undeployed_by_job BIGINT;

UPDATE deployments SET stats = (SELECT json_group_object(key, value) FROM json_each(deployments.spec) WHERE key IN ('scoring_lag', 'scoring_errors', 'last_scoring_error') HAVING count(*) > 0), undeployed_by_job = json_extract(spec, '$.undeployed_by_job'), spec = json_remove(spec, '$.scoring_lag', '$.scoring_errors', '$.last_scoring_error', '$.undeployed_by_job');

UPDATE mlmanager_alembic_version SET version_num='0004_typed_deployments' WHERE mlmanager_alembic_version.version_num = '0003_model_representations';

