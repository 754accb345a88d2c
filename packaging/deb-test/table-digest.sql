-- One line per table: name, row count and a digest of every row in key order. Run against
-- the original and the restored database; the outputs must be identical.
SELECT 'customers', count(*), md5(string_agg(c::text, '|' ORDER BY id)) FROM customers c;
SELECT 'orders', count(*), md5(string_agg(o::text, '|' ORDER BY id)) FROM orders o;
