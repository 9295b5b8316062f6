"""Message templates through HTTP: create, list, read, change with If-Match and delete, every version
kept; unknown variables and syntax errors refused at save with where; the sandbox refusing escapes
at save and at render; previews for a Chinese customer (custom field, SMS segments), masked for
callers without the PII scope; other workspaces' and invisible customers' ids; and the render
function the send paths call."""

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.access import Role, user_caller
from app.core.errors import NotFound, ValidationFailed
from app.models import AuditEntry, MessageTemplateRevision
from app.services.outreach import message_templates, template_sandbox
from tests.factories import Tenant, customer_body

URL = "/api/v1/message-templates"


def _email(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "生日祝福",
        "channel": "email",
        "locale": "zh-CN",
        "subject": "{{ customer.name }}，生日快乐",
        "body": "亲爱的{{ customer.name }}：\n祝您生日快乐！{{ workspace.name }}",
        "html": "<p>亲爱的{{ customer.name }}</p>",
    }
    body.update(overrides)
    return body


def _sms(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "会员提醒",
        "channel": "sms",
        "body": "尊敬的{{ customer.name }}，您的会员等级为{{ customer.custom_fields.vip_level }}，"
        "优惠码{{ vars.coupon }}将于本月底到期，请尽快使用。感谢您一直以来对我们的支持与信任，祝您生活愉快！",
        "sms_template_code": "SMS_154950909",
        "sms_sign_name": "关系科技",
        "sms_params": {"name": "{{ customer.name }}", "level": "{{ customer.custom_fields.vip_level }}"},
        "variables": ["coupon"],
    }
    body.update(overrides)
    return body


async def _create(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(URL, json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _customer(client: httpx.AsyncClient, tenant: Tenant, **fields: Any) -> str:
    response = await client.post("/api/v1/customers", json=customer_body(**fields), headers=tenant.headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _vip_field(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = {"key": "vip_level", "label": "VIP level", "type": "text"}
    response = await client.post("/api/v1/custom-fields", json=body, headers=tenant.headers())
    assert response.status_code == 201, response.text


async def test_create_read_list_change_and_delete_keep_every_version(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    created = await client.post(URL, json=_email(), headers={**tenant.headers(), "Idempotency-Key": "t-1"})
    assert created.status_code == 201, created.text
    template = created.json()
    assert created.headers["Location"] == f"{URL}/{template['id']}" and created.headers["ETag"] == '"1"'
    assert (template["channel"], template["version"], template["sms_params"], template["variables"]) == (
        "email",
        1,
        {},
        [],
    )
    replayed = await client.post(URL, json=_email(), headers={**tenant.headers(), "Idempotency-Key": "t-1"})
    assert replayed.headers["Idempotent-Replayed"] == "true" and replayed.json()["id"] == template["id"]
    other = await _create(client, tenant, _sms(name="SMS reminder", sms_params={}, body="{{ vars.coupon }}"))

    read = await client.get(f"{URL}/{template['id']}", headers=tenant.headers("readonly"))
    assert read.status_code == 200 and read.headers["ETag"] == '"1"' and read.json() == template
    listed = await client.get(URL, headers=tenant.headers("sales"))
    assert [t["id"] for t in listed.json()["items"]] == [other["id"], template["id"]]
    by_channel = await client.get(URL, params={"channel": "sms"}, headers=tenant.headers())
    assert [t["id"] for t in by_channel.json()["items"]] == [other["id"]]
    by_name = await client.get(URL, params={"name": "生日"}, headers=tenant.headers())
    assert [t["id"] for t in by_name.json()["items"]] == [template["id"]]
    page = await client.get(URL, params={"limit": 1}, headers=tenant.headers())
    rest = await client.get(URL, params={"cursor": page.json()["next_cursor"]}, headers=tenant.headers())
    assert [t["id"] for t in rest.json()["items"]] == [template["id"]]

    url = f"{URL}/{template['id']}"
    change = {"body": "{{ customer.name }}，新年快乐！", "html": None}
    assert (await client.patch(url, json=change, headers=tenant.headers())).status_code == 428
    stale = await client.patch(url, json=change, headers={**tenant.headers(), "If-Match": '"7"'})
    assert stale.status_code == 412 and stale.json()["current_version"] == 1
    changed = await client.patch(url, json=change, headers={**tenant.headers(), "If-Match": '"1"'})
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"'
    assert (changed.json()["body"], changed.json()["html"]) == ("{{ customer.name }}，新年快乐！", None)
    same = await client.patch(url, json=change, headers={**tenant.headers(), "If-Match": '"2"'})
    assert same.json()["version"] == 2

    versions = (await client.get(f"{url}/versions", headers=tenant.headers())).json()["items"]
    assert [(v["version"], v["content"]["body"]) for v in versions] == [
        (2, "{{ customer.name }}，新年快乐！"),
        (1, _email()["body"]),
    ]
    first = await client.get(f"{url}/versions/1", headers=tenant.headers())
    assert first.json()["content"]["html"] == "<p>亲爱的{{ customer.name }}</p>"
    assert (await client.get(f"{url}/versions/3", headers=tenant.headers())).status_code == 404

    assert (await client.delete(url, headers={**tenant.headers(), "If-Match": '"1"'})).status_code == 412
    assert (await client.delete(url, headers={**tenant.headers(), "If-Match": '"2"'})).status_code == 204
    assert (await client.get(url, headers=tenant.headers())).status_code == 404
    assert [t["id"] for t in (await client.get(URL, headers=tenant.headers())).json()["items"]] == [other["id"]]
    kept = await client.get(f"{url}/versions", headers=tenant.headers())
    assert [v["version"] for v in kept.json()["items"]] == [2, 1]
    # The name is free again once the template is deleted.
    await _create(client, tenant, _email())

    actions = (
        await db.scalars(
            select(AuditEntry.action).where(AuditEntry.entity_id == template["id"]).order_by(AuditEntry.id)
        )
    ).all()
    assert list(actions) == ["created", "updated", "deleted"]


async def test_a_second_live_template_with_the_same_name_and_locale_is_409(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    first = await _create(client, tenant, _email())
    again = await client.post(URL, json=_email(), headers=tenant.headers())
    assert again.status_code == 409 and again.json()["existing_id"] == first["id"]
    await _create(client, tenant, _email(locale="en"))
    renamed = await client.patch(
        f"{URL}/{first['id']}", json={"locale": "en"}, headers={**tenant.headers(), "If-Match": "*"}
    )
    assert renamed.status_code == 409


async def test_unknown_variables_are_422_naming_each_field_line_and_path(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    body = _sms(
        body="第一行\n{{ customer.nme }}\n{{ vars.coupon }}{{ vars.other }}",
        sms_params={"name": "{{ customer.custom_fields.nope }}", "tier": "{{ customer.value }}"},
    )
    response = await client.post(URL, json=body, headers=tenant.headers())
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["detail"].startswith("body: Unknown variable customer.nme")
    assert [(e["loc"], e["line"], e["variable"], e["type"]) for e in problem["errors"]] == [
        (["body", "body"], 2, "customer.nme", "unknown_variable"),
        (["body", "body"], 3, "vars.other", "unknown_variable"),
        (["body", "sms_params", "name"], 1, "customer.custom_fields.nope", "unknown_variable"),
        (["body", "sms_params", "tier"], 1, "customer.value", "unknown_variable"),
    ]
    assert "group of variables" in problem["errors"][3]["msg"]
    # Names outside the catalogue's roots, Jinja's own helpers included, are unknown too.
    helpers = await client.post(URL, json=_email(body="{{ range(3) }}{{ lipsum() }}"), headers=tenant.headers())
    assert [e["variable"] for e in helpers.json()["errors"]] == ["range", "lipsum"]
    assert (await db.scalars(select(MessageTemplateRevision))).first() is None


async def test_fields_of_another_channel_or_missing_ones_are_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(URL, json=_email(subject=None, sms_sign_name="关系"), headers=tenant.headers())
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["errors"]] == [
        (["body", "subject"], "channel_field_required"),
        (["body", "sms_sign_name"], "extra_field"),
    ]
    template = await _create(client, tenant, _email())
    cleared = await client.patch(
        f"{URL}/{template['id']}", json={"subject": None}, headers={**tenant.headers(), "If-Match": "*"}
    )
    assert cleared.status_code == 422 and cleared.json()["errors"][0]["loc"] == ["body", "subject"]
    no_body = await client.patch(
        f"{URL}/{template['id']}", json={"body": None}, headers={**tenant.headers(), "If-Match": "*"}
    )
    assert no_body.status_code == 422
    channel = await client.patch(
        f"{URL}/{template['id']}", json={"channel": "sms"}, headers={**tenant.headers(), "If-Match": "*"}
    )
    assert channel.status_code == 422
    assert (await client.get(f"{URL}/{template['id']}", headers=tenant.headers())).json()["version"] == 1


async def test_a_template_that_does_not_parse_is_422_with_its_line(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        URL, json=_email(html="<p>\n{% if customer.name %}\n{{ customer.name }}</p>"), headers=tenant.headers()
    )
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert (error["loc"], error["type"], error["line"]) == (["body", "html"], "template_syntax", 3)
    assert "Template syntax error" in error["msg"]


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
        ("{{ cycler.__init__.__globals__ }}", "unsafe"),
        ("{{ customer.name['__class__'] }}", "unsafe"),
        ("{% macro f() %}{{ customer.name }}{% endmacro %}", "tag"),
        ("{% include 'x' %}", "tag"),
        ("{{ " + "(" * 500 + "1" + ")" * 500 + " }}", "template_syntax"),
        ("{% if customer.name %}" * 120 + "{% endif %}" * 120, "template_syntax"),
        (
            "{% for a in customer.tags %}{% for b in customer.name %}{% endfor %}{% endfor %}",
            "loop_depth",
        ),
    ],
)
async def test_sandbox_escapes_and_unbounded_work_are_refused_at_save(
    client: httpx.AsyncClient, tenant: Tenant, source: str, kind: str
) -> None:
    response = await client.post(URL, json=_email(body=source), headers=tenant.headers())
    assert response.status_code == 422, response.text
    assert [(e["loc"], e["type"]) for e in response.json()["errors"]] == [(["body", "body"], kind)]
    assert (await client.get(URL, headers=tenant.headers())).json()["items"] == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("ok\n{{ customer.name.center(100000000) }}", "access to attribute 'center' of 'str' object is unsafe"),
        ("ok\n{{ customer.name * 100000000 }}", "repetition longer than"),
        ("ok\n{{ 10 ** 100000 }}", "exponent too large"),
        ("ok\n{{ '%0999999999d' % 1 }}", "% formatting is not available"),
        ("ok\n{{ customer.name | replace('', customer.name * 1000) }}", "replace would make a text longer"),
        ("ok\n{{ 1 / (customer.tags | length) }}", "ZeroDivisionError"),
        (
            "ok\n{% for t in customer.name * 1000 %}{{ customer.name * 1000 }}{% endfor %}",
            "renders longer than",
        ),
    ],
)
async def test_what_the_sandbox_refuses_at_render_is_a_precise_422(
    client: httpx.AsyncClient, tenant: Tenant, source: str, message: str
) -> None:
    template = await _create(client, tenant, _email(body=source))
    customer = await _customer(client, tenant, name="王" * 100)
    response = await client.post(
        f"{URL}/{template['id']}/preview", json={"customer_id": customer}, headers=tenant.headers()
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["template", "body"] and error["type"] == "render_failed", error
    assert message in error["msg"]
    assert error["line"] == (None if "renders longer" in message else 2)


async def test_sms_preview_for_a_chinese_customer_with_a_custom_field_counts_segments(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await _vip_field(client, tenant)
    template = await _create(client, tenant, _sms())
    customer = await _customer(client, tenant, name="欧阳娜娜", custom_fields={"vip_level": "金卡"})
    url = f"{URL}/{template['id']}/preview"
    response = await client.post(
        url, json={"customer_id": customer, "variables": {"coupon": "BDAY-2026"}}, headers=tenant.headers()
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    text = (
        "尊敬的欧阳娜娜，您的会员等级为金卡，优惠码BDAY-2026将于本月底到期，请尽快使用。"
        "感谢您一直以来对我们的支持与信任，祝您生活愉快！"
    )
    assert preview["text"] == text and preview["subject"] is None and preview["html"] is None
    assert (preview["template_version"], preview["channel"], preview["pii_masked"]) == (1, "sms", False)
    assert preview["sms"] == {
        "template_code": "SMS_154950909",
        "sign_name": "关系科技",
        "params": {"name": "欧阳娜娜", "level": "金卡"},
        "characters": len("【关系科技】" + text),
        "encoding": "ucs2",
        "segments": 2,
    }
    assert len("【关系科技】" + text) > 70
    missing = await client.post(url, json={"customer_id": customer}, headers=tenant.headers())
    assert missing.status_code == 422 and missing.json()["errors"][0]["loc"] == ["body", "variables", "coupon"]
    extra = await client.post(
        url, json={"customer_id": customer, "variables": {"coupon": "x", "other": 1}}, headers=tenant.headers()
    )
    assert extra.status_code == 422 and extra.json()["errors"][0]["loc"] == ["body", "variables", "other"]
    short = await _create(client, tenant, _sms(name="short", body="Hi {{ vars.coupon }}", sms_sign_name="Guanxi"))
    ascii_preview = await client.post(
        f"{URL}/{short['id']}/preview",
        json={"customer_id": customer, "variables": {"coupon": "X1"}},
        headers=tenant.headers(),
    )
    assert ascii_preview.json()["sms"] | {"params": None} == {
        "template_code": "SMS_154950909",
        "sign_name": "Guanxi",
        "params": None,
        "characters": len("【Guanxi】Hi X1"),
        "encoding": "ucs2",
        "segments": 1,
    }


async def test_preview_masks_personal_values_for_callers_without_the_pii_scope(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = "{{ customer.email }} / {{ customer.phone }} / {{ customer.street }} / {{ customer.name }}"
    template = await _create(client, tenant, _email(body=body, html="<p>{{ customer.name }}</p>"))
    customer = await _customer(
        client,
        tenant,
        name="李<b>雷</b>",
        emails=["lilei@example.com"],
        phones=["+8613800138000"],
        address={"street": "科技园路1号"},
    )
    url = f"{URL}/{template['id']}/preview"
    full = (await client.post(url, json={"customer_id": customer}, headers=tenant.headers())).json()
    assert full["text"] == "lilei@example.com / +8613800138000 / 科技园路1号 / 李<b>雷</b>"
    assert full["html"] == "<p>李&lt;b&gt;雷&lt;/b&gt;</p>" and full["pii_masked"] is False
    assert full["subject"] == "李<b>雷</b>，生日快乐"
    masked = await client.post(url, json={"customer_id": customer}, headers=tenant.headers("readonly"))
    assert masked.status_code == 200, masked.text
    assert masked.json()["text"] == "l***@example.com / +861******8000 / *** / 李<b>雷</b>"
    assert masked.json()["pii_masked"] is True


async def test_render_for_customer_uses_real_values_whatever_the_caller_sees(
    client: httpx.AsyncClient, tenant: Tenant, db: AsyncSession
) -> None:
    await _vip_field(client, tenant)
    template = await _create(client, tenant, _sms(body="{{ customer.email }} {{ vars.coupon }}"))
    customer = await _customer(client, tenant, name="韩梅梅", emails=["hmm@example.com"])
    readonly = tenant.users["readonly"]
    ctx = user_caller(workspace_id=tenant.id, user_id=readonly.id, role=Role.READONLY, team_id=None)
    rendered = await message_templates.render_for_customer(
        db, ctx, template_id=uuid.UUID(template["id"]), customer_id=uuid.UUID(customer), variables={"coupon": "C-1"}
    )
    assert rendered == message_templates.Rendered(
        template_id=rendered.template_id,
        template_version=1,
        channel="sms",
        subject=None,
        text="hmm@example.com C-1",
        html=None,
        sms_template_code="SMS_154950909",
        sms_sign_name="关系科技",
        sms_params={"name": "韩梅梅", "level": ""},
    )
    assert str(rendered.template_id) == template["id"]
    with pytest.raises(ValidationFailed):
        await message_templates.render_for_customer(
            db, ctx, template_id=uuid.UUID(template["id"]), customer_id=uuid.UUID(customer), variables={}
        )
    sales = tenant.users["sales_west"]
    narrow = user_caller(workspace_id=tenant.id, user_id=sales.id, role=Role.SALES, team_id=sales.team_id)
    with pytest.raises(NotFound):
        await message_templates.render_for_customer(
            db,
            narrow,
            template_id=uuid.UUID(template["id"]),
            customer_id=uuid.UUID(customer),
            variables={"coupon": "C-1"},
        )


async def test_other_workspaces_ids_and_invisible_customers_are_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    template = await _create(client, tenant, _email())
    foreign = await _create(client, other_tenant, _email())
    mine = await _customer(client, tenant)
    theirs = await _customer(client, other_tenant)
    for method, path, body in (
        ("GET", f"{URL}/{foreign['id']}", None),
        ("GET", f"{URL}/{foreign['id']}/versions", None),
        ("GET", f"{URL}/{foreign['id']}/versions/1", None),
        ("PATCH", f"{URL}/{foreign['id']}", {"name": "x"}),
        ("DELETE", f"{URL}/{foreign['id']}", None),
        ("POST", f"{URL}/{foreign['id']}/preview", {"customer_id": mine}),
        ("POST", f"{URL}/{template['id']}/preview", {"customer_id": theirs}),
    ):
        response = await client.request(method, path, json=body, headers={**tenant.headers(), "If-Match": "*"})
        assert response.status_code == 404, (method, path, response.text)
    # A salesperson previews only the customers it may see.
    west = await _customer(client, tenant, owner_id=str(tenant.users["sales_west"].id))
    hidden = await client.post(
        f"{URL}/{template['id']}/preview", json={"customer_id": west}, headers=tenant.headers("sales")
    )
    assert hidden.status_code == 404
    assert (await client.get(URL, headers=other_tenant.headers())).json()["items"][0]["id"] == foreign["id"]


async def test_writes_need_the_outreach_scope_and_variables_list_the_catalogue(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for who in ("sales", "support", "readonly"):
        assert (await client.post(URL, json=_email(), headers=tenant.headers(who))).status_code == 403
    template = await _create(client, tenant, _email())
    patched = await client.patch(
        f"{URL}/{template['id']}", json={"name": "x"}, headers={**tenant.headers("sales"), "If-Match": "*"}
    )
    assert patched.status_code == 403
    assert (await client.post(URL, json=_email(name="经理"), headers=tenant.headers("manager"))).status_code == 201
    await _vip_field(client, tenant)
    listed = await client.get(f"{URL}/variables", headers=tenant.headers("readonly"))
    variables = {v["path"]: v for v in listed.json()["items"]}
    assert variables["customer.custom_fields.vip_level"] == {
        "path": "customer.custom_fields.vip_level",
        "type": "string",
        "label": "VIP level",
        "personal": False,
    }
    assert variables["customer.email"]["personal"] and not variables["customer.name"]["personal"]
    assert {"customer.birthday", "customer.value.tier", "customer.lifecycle.stage", "workspace.name"} <= set(variables)
    assert not any(path.startswith("customer.consent") for path in variables)


async def test_values_of_every_kind_render_and_blank_when_unset(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = (
        "{{ customer.code }}|{{ customer.birthday }}|{{ customer.birthday.year }}|{{ customer.company }}|"
        "{{ customer.tags | join(',') }}|{{ customer.value.tier }}|{{ customer.created_at[:4] }}|"
        "{% for t in customer.tags %}{{ loop.index }}{{ t }}{% endfor %}"
    )
    template = await _create(client, tenant, _email(body=body))
    customer = await _customer(client, tenant, birthday="1990-05-01", tags=["vip", "茶"])
    response = await client.post(
        f"{URL}/{template['id']}/preview", json={"customer_id": customer}, headers=tenant.headers()
    )
    assert response.status_code == 200, response.text
    code, birthday, year, company, tags, tier, created, looped = response.json()["text"].split("|")
    assert code.startswith("KH-") and (birthday, year, company, tags, tier) == ("1990-05-01", "1990", "", "vip,茶", "")
    assert created.isdigit() and looped == "1vip2茶"


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, "gsm7", 1),
        ("a" * 161, "gsm7", 2),
        ("a" * 306, "gsm7", 2),
        ("a" * 307, "gsm7", 3),
        ("€" * 80, "gsm7", 1),
        ("€" * 81, "gsm7", 2),
        ("汉" * 70, "ucs2", 1),
        ("汉" * 71, "ucs2", 2),
        ("汉" * 134, "ucs2", 2),
        ("汉" * 135, "ucs2", 3),
        ("a" * 69 + "😀", "ucs2", 2),
    ],
)
def test_sms_segments_follow_gsm7_and_ucs2_sizes(text: str, encoding: str, segments: int) -> None:
    size = template_sandbox.sms_size(text)
    assert (size.characters, size.encoding, size.segments) == (len(text), encoding, segments)
