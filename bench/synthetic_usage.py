"""A month of synthetic requests generated inside ClickHouse (``numbers()``), for the store benches.

October 2026 (Asia/Shanghai), tenant acme: 6 departments, 12 projects, 8 models, 5,000 users,
40 keys, costs computed in SQL. Bind ``{rows:UInt64}``.
"""

from __future__ import annotations

_FILL = """
INSERT INTO usage_events (source, event_id, request_id, event_time, tenant, user_id, department, project,
    feature, environment, api_key, provider, model, trace_id, span_id, parent_span_id, usage_source, batch,
    input_tokens, output_tokens, cached_read_tokens, cache_write_tokens, reasoning_tokens,
    input_nanos, cached_read_nanos, cache_write_nanos, output_nanos, reasoning_nanos, cost_nanos,
    price_version, flags)
SELECT
    concat('//svc/', ['copilot','helpdesk','review','contracts','crm','search'][number % 6 + 1]) AS source,
    concat('evt-', toString(number)), concat('req-', toString(number)),
    toDateTime64('2026-09-30 16:00:00', 6, 'UTC') + toIntervalSecond(intDiv(number * 2678399, {rows:UInt64})),
    'acme', concat('u-', toString(number % 5000)),
    ['research','support','engineering','legal','sales','__SIXTH__'][number % 6 + 1],
    concat('p', toString(number % 12)),
    ['chat','triage','review','summarize','email-draft','embed'][number % 6 + 1],
    if(number % 7 = 0, 'staging', 'prod'), concat('key-', toString(number % 40)),
    ['openai','openai','anthropic','deepseek','google','dashscope','openai','openai'][number % 8 + 1],
    ['gpt-4o','gpt-4o-mini','claude-sonnet-4-20250514','deepseek-chat',
     'gemini-2.5-pro','qwen-plus','o3-mini','gpt-4.1'][number % 8 + 1],
    __TRACE__,
    'provider', false,
    1000 + number % 3000 AS inp, 100 + number % 700 AS outp, (number % 5) * 200 AS cached, 0, 0,
    (inp - cached) * 2500, cached * 1250, 0, outp * 10000, 0,
    (inp - cached) * 2500 + cached * 1250 + outp * 10000,
    'bench', []
FROM numbers({rows:UInt64})
"""
_NO_TRACE = "'', '', ''"
# One request in ten in traces of 40 requests (the first one the root, the others its children).
_TRACED = """if(number % 10 < 1, concat('t-', toString(intDiv(number, 40))), '') AS trace_id,
    if(trace_id != '', concat('s-', toString(number)), ''),
    if(trace_id != '' AND number % 40 != 0, concat('s-', toString(intDiv(number, 40) * 40)), '')"""


def fill_sql(*, sixth_department: str = "platform", traced: bool = False) -> str:
    """The INSERT ... SELECT of the synthetic month (a department name in single quotes must not contain one)."""
    if "'" in sixth_department:
        raise ValueError("no quote in the department name")
    return _FILL.replace("__SIXTH__", sixth_department).replace("__TRACE__", _TRACED if traced else _NO_TRACE)
