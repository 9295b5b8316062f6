"""Provider adapters, one module per provider, behind the interface of `base`."""

import aiohttp

from app.services.outreach.providers import aliyun_sms, http_call, smtp, tencent_sms, wecom
from app.services.outreach.providers.base import Account, Outgoing, Provider, Result, http_session

__all__ = ["Account", "Outgoing", "Provider", "Result", "http_session", "provider"]


def provider(account: Account, http: aiohttp.ClientSession) -> Provider:
    """The adapter of the account's kind; HTTP providers share `http` (whose resolver refuses
    private addresses unless the operator allows them)."""
    if account.kind == "email":
        return smtp.SmtpProvider(account)
    if account.kind == "sms_aliyun":
        return aliyun_sms.AliyunSms(account, http)
    if account.kind == "sms_tencent":
        return tencent_sms.TencentSms(account, http)
    if account.kind == "wecom_robot":
        return wecom.WecomRobot(account, http)
    return http_call.HttpCall(account, http)
