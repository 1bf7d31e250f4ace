"""Headless Chromium for the console's browser tests: Debian's /usr/bin/chromium driven by Playwright.

Nothing downloads a browser (``playwright install`` is never run): the path is given explicitly,
with the flags of DESIGN.md's Environment section. :class:`Isolated` blocks every request that is
not for the console under test and remembers it, so a test can assert that the page asked
nothing of any other host (no CDN, no font service, no analytics).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Browser, BrowserContext, Page, Playwright, Route, async_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"


async def launch(playwright: Playwright) -> Browser:
    return await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)


@dataclass
class Isolated:
    """A browser context that reaches the console at ``base`` and nothing else."""

    context: BrowserContext
    base: str
    allowed: set[str] = field(default_factory=set)
    blocked: list[str] = field(default_factory=list)
    served: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, browser: Browser, base: str, *, locale: str = "zh-CN") -> Isolated:
        context = await browser.new_context(locale=locale, viewport={"width": 1400, "height": 1000})
        isolated = cls(context, base, {urlsplit(base).netloc})

        async def route(r: Route) -> None:
            url = r.request.url
            if urlsplit(url).netloc in isolated.allowed and url.startswith(("http://", "https://")):
                isolated.served.append(url)
                await r.continue_()
            else:
                isolated.blocked.append(url)
                await r.abort()

        await context.route("**/*", route)
        return isolated

    async def page(self) -> Page:
        page = await self.context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # the console's "are you sure?" prompts
        return page

    async def close(self) -> None:
        await self.context.close()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A launched browser for a module's tests, closed after them."""
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def isolated_to(browser: Browser, base: str) -> AsyncIterator[Isolated]:
    """An :class:`Isolated` context for one test; on leaving, the page must have asked no other host."""
    context = await Isolated.open(browser, base)
    try:
        yield context
    finally:
        assert context.blocked == [], f"the console asked other hosts: {context.blocked}"
        await context.close()


async def sign_in(page: Page, base: str, *, token: str = "", name: str = "", password: str = "") -> None:
    await page.goto(f"{base}/")
    assert "/login" in page.url
    if token:
        await page.fill("input[name=token]", token)
    else:
        await page.fill("input[name=name]", name)
        await page.fill("input[name=password]", password)
    async with page.expect_navigation():
        await page.click("#sign-in button[type=submit]")
    assert "/login" not in page.url, await page.inner_text("main")


async def signed_in(isolated: Isolated, token: str) -> Page:
    """A new page of ``isolated``, signed in to its console with ``token``."""
    page = await isolated.page()
    await sign_in(page, isolated.base, token=token)
    return page


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
