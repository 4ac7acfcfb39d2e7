BEGIN;

CREATE SCHEMA IF NOT EXISTS "mlmanager";

SET search_path TO "mlmanager", public;

-- Running upgrade 0007_schedules -> 0008_artifact_storage

ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

UPDATE mlmanager.mlmanager_alembic_version SET version_num='0008_artifact_storage' WHERE mlmanager.mlmanager_alembic_version.version_num = '0007_schedules';

COMMIT;

