-- Running upgrade 0007_schedules -> 0008_artifact_storage

UPDATE mlmanager_alembic_version SET version_num='0008_artifact_storage' WHERE mlmanager_alembic_version.version_num = '0007_schedules';

