"""An Alibaba Cloud SMS stand-in for the messages bench: answers SendSms with Code OK at once and
records when each message (its OutId) arrived; GET /stats returns the arrivals, DELETE /stats
forgets them. Run: python bench/sms_stand_in.py PORT"""

import sys
import time
from urllib.parse import parse_qs

from aiohttp import web

arrivals: dict[str, float] = {}


async def send_sms(request: web.Request) -> web.Response:
    form = parse_qs((await request.read()).decode())
    arrivals[form.get("OutId", ["?"])[0]] = time.time()
    return web.json_response({"Code": "OK", "Message": "OK", "BizId": f"biz-{len(arrivals)}", "RequestId": "r"})


async def stats(_: web.Request) -> web.Response:
    return web.json_response(arrivals)


async def forget(_: web.Request) -> web.Response:
    arrivals.clear()
    return web.json_response({})


app = web.Application()
app.router.add_post("/", send_sms)
app.router.add_get("/stats", stats)
app.router.add_delete("/stats", forget)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
