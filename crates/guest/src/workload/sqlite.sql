-- vessel bench workload: bulk inserts, two indexes, indexed point and range queries.
CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, name TEXT, v REAL);
BEGIN;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < @ROWS@)
INSERT INTO t(k, name, v) SELECT (i * 7919) % @ROWS@, 'name-' || (i * 31 % 1000), i * 0.5 FROM c;
COMMIT;
BEGIN;
INSERT INTO t(k, name, v) VALUES (1, 'single-1', 1.5);
INSERT INTO t(k, name, v) VALUES (2, 'single-2', 2.5);
COMMIT;
CREATE INDEX t_k ON t(k);
CREATE INDEX t_name ON t(name);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < @QUERIES@)
SELECT count(*), sum((SELECT v FROM t WHERE k = (i * 13) % @ROWS@ LIMIT 1)) FROM c;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < @QUERIES@ / 10)
SELECT sum((SELECT count(*) FROM t WHERE name = 'name-' || (i % 1000))) FROM c;
SELECT name, count(*), sum(v) FROM t WHERE name BETWEEN 'name-100' AND 'name-105' GROUP BY name ORDER BY name;
SELECT count(*), min(k), max(k) FROM t WHERE k BETWEEN 1000 AND 50000;
