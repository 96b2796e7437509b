-- Several instances on one database need PostgreSQL (see ../postgres/0004_cluster.sql). SQLite
-- serves one instance: nothing to add. The file keeps both dialects at the same version.
SELECT 1;
