import json, pytest
from django.db import connection
pytestmark = pytest.mark.django_db

def q(sql, *p):
    with connection.cursor() as c:
        c.execute(sql, p); return c.fetchall()

def nest(d, leaf="[]"):
    return '{"a": ' * 0 + "[" * (d-1) + leaf + "]" * (d-1)

def test_exp():
    P = """strict $.**{32} ? (@.type() == "object" || @.type() == "array")"""
    for doc in ["{}", "[]", nest(32), nest(33), nest(33, "{}"), nest(32, "[1]"), '{"a":'*31+'{}'+'}'*31, '{"a":'*32+'{}'+'}'*32, '{"a":'*32+'1'+'}'*32, nest(5000)]:
        d = json.loads(doc) if len(doc) < 2000 else None
        print(len(doc), q("SELECT jsonb_path_exists(%s::jsonb, %s::jsonpath)", doc, P)[0][0])
    print(q("SELECT 'a' || chr(10) ~ '[\\x01-\\x1f\\x7f-\\u009f]', 'a' || chr(155) ~ '[\\x01-\\x1f\\x7f-\\u009f]', 'aé' ~ '[\\x01-\\x1f\\x7f-\\u009f]', 'a' || chr(127) ~ '[\\x01-\\x1f\\x7f-\\u009f]', 'a' || chr(160) ~ '[\\x01-\\x1f\\x7f-\\u009f]'"))
    print(q("SELECT octet_length(%s::jsonb::text)", json.dumps({"x": [1e-7, 1e300, -0.0, 0.1, 123.0, "é\n\u0001", True, None]}, ensure_ascii=False)))
    from sisy_pg import limits
    print(len(json.dumps({"x": [1e-7, 1e300, -0.0, 0.1, 123.0, "é\n\u0001", True, None]}, ensure_ascii=False).encode()))
    print(q("SHOW server_version"), q("SHOW lc_ctype"))
