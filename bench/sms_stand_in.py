"""An Alibaba Cloud SMS stand-in for the messages bench and the chaos suite: answers SendSms with Code
OK (after DELAY seconds, default none) and records when each message (its OutId) first arrived and
how many times it arrived; GET /stats returns the first arrivals, GET /received the count per OutId,
DELETE /stats forgets both. Run: python bench/sms_stand_in.py PORT [DELAY]"""

import asyncio
import sys
import time
from collections import Counter
from urllib.parse import parse_qs

from aiohttp import web

arrivals: dict[str, float] = {}
received: Counter[str] = Counter()
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0


async def send_sms(request: web.Request) -> web.Response:
    form = parse_qs((await request.read()).decode())
    reference = form.get("OutId", ["?"])[0]
    arrivals.setdefault(reference, time.time())
    received[reference] += 1
    if delay:
        await asyncio.sleep(delay)
    return web.json_response({"Code": "OK", "Message": "OK", "BizId": f"biz-{len(arrivals)}", "RequestId": "r"})


async def stats(_: web.Request) -> web.Response:
    return web.json_response(arrivals)


async def counts(_: web.Request) -> web.Response:
    return web.json_response(received)


async def forget(_: web.Request) -> web.Response:
    arrivals.clear()
    received.clear()
    return web.json_response({})


app = web.Application()
app.router.add_post("/", send_sms)
app.router.add_get("/stats", stats)
app.router.add_get("/received", counts)
app.router.add_delete("/stats", forget)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
