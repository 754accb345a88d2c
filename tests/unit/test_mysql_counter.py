"""Row counts from a mariadb-dump/mysqldump stream (sources/mysql/counter.py), whatever the
chunking, in both INSERT layouts, with the string contents that look like rows."""

from __future__ import annotations

import pytest

from kbackup.sources.mysql.counter import DumpShapeError, RowCounter

MARIADB = b"""-- MariaDB dump 10.19
CREATE TABLE `t` (
  `id` int(11) NOT NULL
);
INSERT INTO `t` VALUES
(1,'a),(b',0x00FF),
(2,'it\\'s \\\\ (x) \\n',NULL),
(3,NULL,0x28);
CREATE TABLE `empty` (
  `id` int
);
CREATE TABLE `we``ird` (
  `k` varchar(9)
);
/*!50001 CREATE VIEW `v` AS SELECT 1 AS `id` */;
INSERT INTO `we``ird` VALUES ('(('),('\\');(');
INSERT INTO `t` VALUES (4,'',0x);
DELIMITER ;;
/*!50003 CREATE*/ /*!50003 TRIGGER `tr` AFTER INSERT ON `t` FOR EACH ROW
INSERT INTO `t` VALUES (9,'',0x) */;;
DELIMITER ;
DELIMITER ;;
INSERT INTO `t` VALUES (8,'',0x) */;;
DELIMITER ;

-- Dump completed on 2026-12-03 14:12:31
"""

EXPECTED = {"t": 4, "empty": 0, "we`ird": 2}


def count(data: bytes, size: int) -> RowCounter:
    counter = RowCounter()
    for start in range(0, len(data), size):
        assert counter.feed(data[start:start + size]) == data[start:start + size]
    counter.check_complete()
    return counter


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_counts_whatever_the_chunking(size: int) -> None:
    assert count(MARIADB, size).counts == EXPECTED


def test_mysql_one_line_layout() -> None:
    one_line = MARIADB.replace(b"VALUES\n(1", b"VALUES (1").replace(b"),\n(", b"),(")
    assert b"(1,'a),(b',0x00FF),(2," in one_line
    assert count(one_line, 5).counts == EXPECTED


def test_a_dump_cut_short_is_named() -> None:
    with pytest.raises(DumpShapeError, match="Dump completed"):
        count(MARIADB[: MARIADB.index(b"-- Dump")], 10)
    with pytest.raises(DumpShapeError, match="ends inside the rows of table t"):
        count(MARIADB[: MARIADB.index(b"(3,NULL")], 10)


def test_an_unterminated_string_is_named() -> None:
    broken = MARIADB.replace(b"(3,NULL,0x28);", b"(3,'oops,0x28);")
    with pytest.raises(DumpShapeError, match="unterminated string in the rows of table t"):
        count(broken, 10)
