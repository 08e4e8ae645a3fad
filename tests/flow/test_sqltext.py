from ultron_nb.flow.sqltext import normalize_sql, placeholders, substitute, table_references


def test_references_from_joins_ctes_and_subqueries() -> None:
    sql = """
    WITH recent AS (SELECT * FROM impressions WHERE ts > NOW())  -- a CTE
    SELECT r.*, c.ts FROM recent r
    LEFT JOIN clicks c ON r.imp_id = c.imp_id
    WHERE r.user_id IN (SELECT user_id FROM users)
    """
    assert table_references(sql) == ["impressions", "clicks", "users"]


def test_references_in_window_tvf_comma_join_and_quoted_dotted_names() -> None:
    assert table_references(
        "SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE label_join, DESCRIPTOR(ts), "
        "INTERVAL '1' MINUTE)) GROUP BY window_start, window_end"
    ) == ["label_join"]
    assert table_references("SELECT * FROM a, b x, `cat`.`db`.`c` WHERE a.k = b.k") == [
        "a", "b", "c"]


def test_strings_and_comments_are_not_tables() -> None:
    sql = "SELECT 'FROM fake' AS s /* FROM nope */ FROM real_one -- FROM other"
    assert table_references(sql) == ["real_one"]


def test_select_list_commas_are_not_tables() -> None:
    assert table_references("SELECT a, b, c FROM t ORDER BY a, b") == ["t"]


def test_table_functions_are_not_tables() -> None:
    assert table_references("SELECT * FROM s, LATERAL TABLE(split(x)) AS T(w)") == ["s"]
    assert table_references("SELECT * FROM read_parquet('x.parquet')") == []


def test_normalize_ignores_layout_comments_and_keyword_case() -> None:
    a = "select a,\n  b -- note\nfrom   t  where x = 'A  b';"
    b = "SELECT a, b /* other note */ FROM t WHERE x = 'A  b'"
    assert normalize_sql(a) == normalize_sql(b)
    assert normalize_sql("SELECT 'A  b' FROM t") != normalize_sql("SELECT 'A b' FROM t")
    assert normalize_sql("SELECT A FROM t") != normalize_sql("SELECT a FROM t")


def test_placeholders_and_substitution() -> None:
    text = "INTERVAL '${win}' MINUTE WHERE x > ${lo} AND y < ${win}"
    assert placeholders(text) == ["win", "lo"]
    assert substitute(text, {"win": "10"}) == "INTERVAL '10' MINUTE WHERE x > ${lo} AND y < 10"
