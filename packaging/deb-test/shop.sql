-- The database the install test backs up and restores: a few tables with enough rows that a
-- lost or duplicated row shows in the comparison, and a role for the daemon (peer auth).
CREATE ROLE kbackup LOGIN;
GRANT pg_read_all_data TO kbackup;
-- Only for the restore-test verification (scratch databases); a real setup gives that right
-- to a separate login (restore_dsn).
ALTER ROLE kbackup CREATEDB;
CREATE DATABASE shop;
\connect shop
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL);
INSERT INTO customers (name, email)
    SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 5000) g;
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers,
    total numeric(10, 2) NOT NULL,
    note text
);
INSERT INTO orders (customer_id, total, note)
    SELECT 1 + g % 5000, (g % 997) / 7.0, repeat(md5(g::text), 4) FROM generate_series(1, 50000) g;
