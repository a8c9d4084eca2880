"""The sessions of bench/bench_load.py: a Streamlit websocket client (protocol) or a chromium page (browser) that
moves the Forward page's t slider and times each move until the new x_t image has arrived."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

TIMEOUT_S = 10  # a move with no new image by then is an error
SLIDER = "input[type='range'][aria-label='t (index)']"

# Arms a watcher for the next move and returns the key to press. The watcher starts its clock at the keydown (capture
# phase, before the slider sees it) and resolves to {ms, exceptions} once the first image shows the new t, its picture
# loaded; ms is null after TIMEOUT_S.
ARM = """([timeoutMs, sliderSelector]) => {
  const slider = document.querySelector(sliderSelector);
  const v = Number(slider.value), lo = Number(slider.min), hi = Number(slider.max);
  let dir = window.__dir || 1;
  if (v + dir > hi || v + dir < lo) dir = -dir;
  window.__dir = dir;
  const want = `x_t at t = ${v + dir}:`;
  const first = () => document.querySelector("[data-testid='stImage']");
  const before = first()?.querySelector("img")?.getAttribute("src");
  window.__change = new Promise((resolve) => {
    let t0 = null, timer = null;
    const finish = (ms) => {
      observer.disconnect(), clearTimeout(timer), document.removeEventListener("keydown", down, true);
      resolve({ms, exceptions: document.querySelectorAll("[data-testid='stException']").length});
    };
    const check = () => {
      const box = first(), img = box?.querySelector("img");
      if (t0 === null || !img || img.getAttribute("src") === before || !box.textContent.includes(want)) return;
      observer.disconnect();
      if (img.complete && img.naturalWidth) finish(performance.now() - t0);
      else img.addEventListener("load", () => finish(performance.now() - t0), {once: true});
    };
    const down = () => {
      if (t0 !== null) return;
      t0 = performance.now();
      timer = setTimeout(() => finish(null), timeoutMs);
    };
    const observer = new MutationObserver(check);
    document.addEventListener("keydown", down, true);
    observer.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
  });
  return dir > 0 ? "ArrowRight" : "ArrowLeft";
}"""

APP_IDLE = """() => { const w = document.querySelector('[data-testid="stStatusWidget"]');
  return !!document.querySelector('[data-testid="stApp"]') && (!w || !w.innerText.includes('Running')); }"""


# ----------------------------------------------------------------------------------------------------------------
# Sessions: one student each, through a browser page or through Streamlit's websocket protocol


class Session:
    """The record of one session's moves; a driver subclass opens /forward, moves t by one and closes."""

    def __init__(self):
        self.latencies_ms: list[float] = []
        self.timeouts = self.exceptions = self.disconnects = self.skipped_ticks = 0
        self.driver_errors: list[str] = []
        self.measuring = False

    def closed(self, *_) -> None:
        self.disconnects += self.measuring  # the closes of opening and of closing a session are not errors


class BrowserSession(Session):
    """A chromium page in its own context. A move: an arrow key on the t slider, timed in the page."""

    async def open(self, url: str, start_t: int, browser) -> None:
        self.page = await (await browser.new_context(viewport={"width": 1400, "height": 1000})).new_page()
        self.page.on("websocket", lambda ws: ws.on("close", self.closed))
        await self.page.goto(f"{url}/forward")
        await self.page.locator("[data-testid='stImage'] img").first.wait_for(timeout=120_000)
        await self.page.wait_for_function(APP_IDLE, timeout=120_000)
        box = self.page.get_by_role("spinbutton", name="t", exact=True)
        await box.fill(str(start_t))
        await box.press("Enter")
        await self.page.get_by_text(f"x_t at t = {start_t}:").wait_for(timeout=120_000)
        await self.page.wait_for_function(APP_IDLE, timeout=120_000)

    async def move(self) -> float | None:
        key = await self.page.evaluate(ARM, [TIMEOUT_S * 1000, SLIDER])
        await self.page.locator(SLIDER).press(key)
        result = await asyncio.wait_for(self.page.evaluate("window.__change"), TIMEOUT_S + 5)
        self.exceptions += result["exceptions"] > 0  # moves after which an exception box was on the page
        return result["ms"]

    async def close(self) -> None:
        await self.page.context.close()


class ProtocolSession(Session):
    """Streamlit's websocket protocol, spoken as the browser does: a BackMsg asks for a rerun with the slider's new
    value (and the page's current query string); the ForwardMsg deltas come back. A move ends when the x_t image's
    delta has arrived and its picture has been fetched from /media. Nothing is drawn: a student's browser runs on
    their own laptop, not on the server's cores."""

    async def open(self, url: str, start_t: int, _browser=None) -> None:
        import websockets

        self.url, self.page_hash, self.query, self.slider_id, self.t, self.t_max, self.step = url, "", "", "", 0, 0, 1
        self.waiting: tuple[int | None, asyncio.Future] | None = None
        self.fetched, self.fetches = set(), set()  # picture URLs asked for, and the fetches under way
        stream = url.replace("http", "ws", 1) + "/_stcore/stream"
        self.ws = await websockets.connect(stream, subprotocols=["streamlit"], max_size=None, ping_interval=None)
        self.reader = asyncio.create_task(self.read())
        for t in (None, start_t):  # the first run, then t = start_t
            if await self.change(t, timeout=120) is None:
                raise RuntimeError(f"no x_t image in 120 s for t = {t} over the websocket")

    async def move(self) -> float | None:
        if not 0 <= self.t + self.step <= self.t_max:
            self.step = -self.step
        return await self.change(self.t + self.step)

    async def change(self, t: int | None, timeout: float = TIMEOUT_S) -> float | None:
        """A rerun with the slider at t (None: the first run); ms until its x_t image is here, None after timeout."""
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string, state.page_name, state.page_script_hash = self.query, "forward", self.page_hash
        if t is not None:
            state.widget_states.widgets.add(id=self.slider_id).double_array_value.data.append(t)
        self.waiting = t, asyncio.get_running_loop().create_future()
        start = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        try:
            src = await asyncio.wait_for(self.waiting[1], timeout)
        except TimeoutError:
            return None
        await asyncio.to_thread(fetch, self.url + src)
        return 1000 * (time.perf_counter() - start)

    async def read(self) -> None:
        import websockets

        try:
            async for data in self.ws:
                msg = ForwardMsg.FromString(data)
                kind = msg.WhichOneof("type")
                if kind == "navigation":
                    self.page_hash = msg.navigation.page_script_hash
                elif kind == "page_info_changed":
                    self.query = msg.page_info_changed.query_string  # the page keeps its settings in the URL
                elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                    self.element(msg.delta.new_element)
        except websockets.ConnectionClosed:
            pass
        except Exception as e:  # a message this reader cannot handle: say so instead of timing out silently
            self.driver_errors.append(f"reader: {type(e).__name__}: {e}")
        self.closed()
        if self.waiting is not None and not self.waiting[1].done():
            self.waiting[1].set_exception(ConnectionError("the websocket closed"))

    def element(self, e) -> None:
        kind = e.WhichOneof("type")
        if kind == "slider" and e.slider.label == "t (index)":
            self.slider_id, self.t_max = e.slider.id, int(e.slider.max)
        elif kind == "exception":
            self.exceptions += self.measuring  # exception elements received
        elif kind == "imgs" and e.imgs.imgs:
            shown = re.match(r"x_t at t = (\d+):", e.imgs.imgs[0].caption)
            want, done = self.waiting or (-1, None)
            if shown and done and want in (None, int(shown[1])) and not done.done():
                self.t = int(shown[1])
                done.set_result(e.imgs.imgs[0].url)
                return
            for url in {i.url for i in e.imgs.imgs} - self.fetched:  # the other pictures, as a browser loads them
                self.fetched.add(url)
                self.fetches.add(task := asyncio.create_task(self.fetch_quietly(url)))
                task.add_done_callback(self.fetches.discard)

    async def fetch_quietly(self, url: str) -> None:
        try:
            await asyncio.to_thread(fetch, self.url + url)
        except OSError as e:
            self.driver_errors.append(f"{url}: {e}")

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, *self.fetches)


def fetch(url: str) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
        r.read()


DRIVERS = {"protocol": ProtocolSession, "browser": BrowserSession}


async def drive(session: Session, first_tick: float, end: float) -> None:
    """Move t once a second from first_tick until end; each move waits for its image (or its timeout)."""
    loop, tick = asyncio.get_running_loop(), first_tick
    session.measuring = True
    while tick < end:
        await asyncio.sleep(max(0.0, tick - loop.time()))
        try:
            ms = await session.move()
            session.timeouts += ms is None
            session.latencies_ms += [] if ms is None else [ms]
        except Exception as e:  # a closed page, a lost driver: count it, keep the other sessions going
            session.driver_errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")
        tick += 1.0
        while tick < loop.time():
            tick += 1.0
            session.skipped_ticks += 1
    session.measuring = False
