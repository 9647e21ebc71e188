"""Sign-in by emailed link or single sign-on, sessions in signed cookies, CSRF on every POST.

Who may get a sign-in link: the configured admins, members of a configured
space, and staff (an address in `config.staff_domains`). When no staff
domain is configured at all, anyone the store knows from mail (the people
table) may sign in instead. Everyone else gets exactly the same answer
(same page, same status, a token row recorded alike) and no mail, so the
sign-in form never tells who is known. Rate limits count those rows, per
address and per client, across every process sharing the database; past a
limit the answer is 429 for known and unknown addresses alike. The client
is the peer address, or, from a trusted proxy, the last X-Forwarded-For hop.

A link is valid 15 minutes and once. Opening it (GET) only shows a page
with a "Sign in" button; the POST of that button uses it up, so mail
scanners that fetch links do not.

Single sign-on: when `web.sso_header` is set and the request comes straight
from one of `web.trusted_proxies`, the header's address is signed in: a
session (via "sso") is made once and its cookie set, and made again when
the header names someone else. The proxy vouches for the address, so any
well-formed one is accepted. From any other peer the header is ignored.

CSRF: signed-in forms carry a token derived from the session id (signed);
signed-out forms (sign-in, language) carry a double-submit cookie whose
value is signed with the server's key and expires (`ANON_CSRF_SECONDS`), so
a client, or a script that can plant cookies, cannot choose the pair. Paths
under `/digest/` are exempt: their signed link is the authority (RFC 8058
one-click unsubscribe posts with no cookie at all).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from functools import lru_cache
from http.cookies import SimpleCookie
from urllib.parse import quote

from aiohttp import web
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.core.access import is_staff, viewer_for
from bridge.errors import AddressError
from bridge.i18n import translator
from bridge.outbound import outbox
from bridge.outbound.compose import compose, parse_address
from bridge.signing import Signer
from bridge.web.account import auth_store
from bridge.web.frame.context import language, render, viewer
from bridge.web.frame.keys import (
    CSRF_TOKEN,
    USER,
    VIEWER,
    config_of,
    now_of,
    send_now,
    signer_of,
    store_of,
)
from bridge.web.frame.middleware import Handler

SESSION_COOKIE = "bridge_session"
CSRF_COOKIE = "bridge_csrf"
CSRF_PURPOSE = "csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# POSTs here are authorised by the signed token in their link, not a form token.
CSRF_EXEMPT_PREFIXES = ("/digest/",)
ANON_CSRF_PURPOSE = "csrf-signed-out"
ANON_CSRF_SECONDS = 12 * 3600  # a signed-out form older than this must be reloaded
# No reader, no store read: static files and probes.
NO_SESSION_PREFIXES = ("/static/", "/healthz", "/metrics")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The raw id of this request's session (None when signed out), and cookies to set.
SESSION_ID: web.RequestKey[str | None] = web.RequestKey("session_id")
NEW_SESSION: web.RequestKey[str] = web.RequestKey("new_session", str)
NEW_CSRF: web.RequestKey[str] = web.RequestKey("new_csrf", str)
DROP_SESSION: web.RequestKey[bool] = web.RequestKey("drop_session", bool)


# --- who is asking --------------------------------------------------------------


@lru_cache(maxsize=16)
def _networks(
    proxies: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None


def from_trusted_proxy(request: web.Request, config: Config) -> bool:
    """Whether the peer of this connection is one of `web.trusted_proxies`."""
    peer = _ip(request.remote)
    return peer is not None and any(peer in net for net in _networks(config.web.trusted_proxies))


def client_of(request: web.Request, config: Config) -> str:
    """The client's address for rate limits: the peer, or what a trusted proxy says it saw."""
    if from_trusted_proxy(request, config):
        hops = request.headers.get("X-Forwarded-For", "").split(",")
        nearest = _ip(hops[-1])
        if nearest is not None:
            return str(nearest)
    return request.remote or ""


def _sso_address(request: web.Request, config: Config) -> str | None:
    header = config.web.sso_header
    if not header or header not in request.headers or not from_trusted_proxy(request, config):
        return None
    value = request.headers[header].strip().lower()
    try:
        parse_address(value)
    except AddressError:
        return None
    return value


def safe_next(value: str) -> str:
    """`value` when it is a path on this site, else "" (never an open redirect)."""
    if (
        not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or any(ord(c) < 0x20 or c == "\\" for c in value)
    ):
        return ""
    return value


# --- middlewares --------------------------------------------------------------


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Put the reader, their settings and the form token on the request (one store read)."""
    request[VIEWER] = None
    request[USER] = None
    request[CSRF_TOKEN] = ""
    request[SESSION_ID] = None
    if request.path.startswith(NO_SESSION_PREFIXES):
        return await handler(request)
    config = config_of(request)
    signer = signer_of(request)
    now = now_of(request)
    store = store_of(request)

    raw_id = _session_id_of(request)
    found: auth_store.SignedIn | None = None
    if raw_id is not None:
        cookie_id = raw_id
        found = await store.read(lambda s: auth_store.load_session(s, cookie_id, now))
        if found is None:
            request[DROP_SESSION] = True
    sso = _sso_address(request, config)
    if sso is not None and (found is None or found.address != sso):
        days = config.web.session_days

        def sign_in(s: Session) -> tuple[str, auth_store.SignedIn | None]:
            new_id = auth_store.create_session(s, sso, "sso", now, days)
            return new_id, auth_store.load_session(s, new_id, now)

        sso_id, found = await store.write(sign_in)
        request[NEW_SESSION] = sso_id
        raw_id = sso_id
    if found is not None and raw_id is not None:
        request[SESSION_ID] = raw_id
        request[VIEWER] = viewer_for(found.address, config.spaces, config.staff_domains)
        request[USER] = found.prefs
        request[CSRF_TOKEN] = signer.sign(CSRF_PURPOSE, raw_id)
    else:
        token = request.cookies.get(CSRF_COOKIE, "")
        if not _signed_out_token_ok(signer, token):
            token = signer.sign_timed(ANON_CSRF_PURPOSE, secrets.token_urlsafe(16))
            request[NEW_CSRF] = token
        request[CSRF_TOKEN] = token
    return await handler(request)


def _signed_out_token_ok(signer: Signer, token: str) -> bool:
    """A form cookie this server issued, within its lifetime."""
    if not token or len(token) > 200:
        return False
    return signer.unsign_timed(ANON_CSRF_PURPOSE, token, ANON_CSRF_SECONDS) is not None


def _session_id_of(request: web.Request) -> str | None:
    """The raw session id in this request's cookie, if the cookie is one we signed."""
    cookie = request.cookies.get(SESSION_COOKIE)
    payload = signer_of(request).unsign("session", cookie) if cookie else None
    return payload if isinstance(payload, str) else None


async def set_cookies(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the session and form cookies this request decided on.

    A signal, not the middleware, so that error pages (made from exceptions
    by the outer error middleware) carry them too. Cookies set on a response
    are already in its headers when the signal runs, so headers are added.
    """
    if request.path.startswith(NO_SESSION_PREFIXES):
        return
    config = config_of(request)
    secure = config.web.cookie_secure
    new_session = request.get(NEW_SESSION)
    if new_session:
        value = signer_of(request).sign("session", new_session)
        max_age = config.web.session_days * 86400
        response.headers.add("Set-Cookie", cookie_header(SESSION_COOKIE, value, secure, max_age))
    elif request.get(DROP_SESSION):
        response.headers.add("Set-Cookie", cookie_header(SESSION_COOKIE, "", secure, 0))
    new_csrf = request.get(NEW_CSRF)
    if new_csrf and not new_session:
        response.headers.add("Set-Cookie", cookie_header(CSRF_COOKIE, new_csrf, secure))


def cookie_header(name: str, value: str, secure: bool, max_age: int | None = None) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Lax, Path=/, Secure unless configured off."""
    jar: SimpleCookie = SimpleCookie()
    jar[name] = value
    morsel = jar[name]
    morsel["path"] = "/"
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    if secure:
        morsel["secure"] = True
    if max_age is not None:
        morsel["max-age"] = max_age
        if max_age == 0:
            morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
    return morsel.OutputString()


@web.middleware
async def csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (403) a state-changing request without this session's form token."""
    # An API request without the session cookie carries no credential a
    # foreign page could borrow (it cannot set Authorization): the API
    # decides on it (401 signed out; a feed token never writes).
    api = request.path.startswith("/api/")
    bare = api and ("Authorization" in request.headers or not request.get(SESSION_ID))
    exempt = bare or request.path.startswith(CSRF_EXEMPT_PREFIXES)
    if request.method in UNSAFE_METHODS and not exempt:
        if request.get(SESSION_ID):
            expected = request[CSRF_TOKEN]
        else:
            # Signed out: the form must echo the cookie this browser already
            # holds, and that cookie must be one this server signed, still fresh.
            held = request.cookies.get(CSRF_COOKIE, "")
            fresh = not request.get(NEW_CSRF) and _signed_out_token_ok(signer_of(request), held)
            expected = held if fresh else ""
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent:
            value = (await request.post()).get(CSRF_FIELD, "")
            sent = value if isinstance(value, str) else ""
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise web.HTTPForbidden(
                text="This form has expired or did not come from this site. "
                "Reload the page and try again."
            )
    return await handler(request)


# --- sign-in by link ------------------------------------------------------------


def may_get_link(session: Session, config: Config, address: str) -> bool:
    """Whether `address` is sent a sign-in link (see the module docstring)."""
    if address in {a.strip().lower() for a in config.web.admins}:
        return True
    if any(space.is_member(address) for space in config.spaces):
        return True
    if config.staff_domains:
        return is_staff(address, config.staff_domains)
    return auth_store.is_known_person(session, address)


def _link_mail_text(lang: str, link: str) -> tuple[str, str]:
    _ = translator(lang)
    minutes = int(auth_store.LOGIN_LIFETIME.total_seconds() // 60)
    subject = _("Your sign-in link for Bridge")
    text = "\n".join(
        [
            _("Hello,"),
            "",
            _("Someone, probably you, asked to sign in to Bridge with this address."),
            _("Open this link within {minutes} minutes to sign in:").format(minutes=minutes),
            "",
            link,
            "",
            _("The link works once. If you did not ask for it, ignore this mail."),
        ]
    )
    return subject, text


async def login_form(request: web.Request) -> web.StreamResponse:
    target = safe_next(request.query.get("next", ""))
    if viewer(request) is not None:
        raise web.HTTPSeeOther(target or "/")
    return _no_store(render(request, "login.html", {"next": target, "address": "", "error": ""}))


async def login_request(request: web.Request) -> web.StreamResponse:
    """Record the request and, for someone who may sign in, queue the mail with the link."""
    form = await request.post()
    address = str(form.get("address", "")).strip().lower()
    target = safe_next(str(form.get("next", "")))
    _ = translator(language(request))
    try:
        parse_address(address)
    except AddressError:
        context = {"next": target, "address": address, "error": _("Enter an email address.")}
        return _no_store(render(request, "login.html", context, status=400))
    config = config_of(request)
    client = client_of(request, config)
    now = now_of(request)
    request_lang = language(request)

    def record(s: Session) -> bool:
        by_address, by_client = auth_store.recent_requests(s, now, address, client)
        if (
            by_address >= config.web.login_per_address_per_hour
            or by_client >= config.web.login_per_client_per_hour
        ):
            return False
        eligible = may_get_link(s, config, address)
        token = auth_store.create_login_token(s, address, client, now, usable=eligible)
        link = f"{config.web.public_url}/login/confirm?t={token}"
        if target:
            link += "&next=" + quote(target, safe="/")
        user = auth_store.get_user(s, address)
        lang = user.language if user is not None and user.language else request_lang
        subject, text = _link_mail_text(lang, link)
        from_address, domain = config.mail_sender
        # Built for everyone, sent to those who may sign in: the work is the same.
        _message, data = compose(
            from_address=from_address,
            from_name="Bridge",
            to_address=address,
            to_name="",
            subject=subject,
            text=text,
            message_id_domain=domain,
            now=now,
        )
        if eligible:
            outbox.enqueue(s, data, recipients=[address], now=now)
        auth_store.purge_expired(s, now)
        return True

    if not await store_of(request).write(record):
        error = _("Too many sign-in requests. Wait an hour and try again.")
        page = render(request, "login.html", {"next": target, "address": address, "error": error})
        page.set_status(429)
        page.headers["Retry-After"] = "3600"
        return _no_store(page)
    send_now(request)  # the person is waiting for it (a no-op without a relay)
    # Without a relay the link only waits in the outbox: say so, the same way for every address.
    mailed = bool(config.outbound.host)
    return _no_store(render(request, "login_sent.html", {"address": address, "mailed": mailed}))


async def confirm_page(request: web.Request) -> web.StreamResponse:
    """The page a link opens: a button that signs in. Looking does not use the link."""
    token = request.query.get("t", "")
    target = safe_next(request.query.get("next", ""))
    now = now_of(request)
    valid = bool(token) and await store_of(request).read(
        lambda s: auth_store.login_token_valid(s, token, now)
    )
    if not valid:
        return _expired(request, target)
    return _no_store(render(request, "login_confirm.html", {"token": token, "next": target}))


async def confirm(request: web.Request) -> web.StreamResponse:
    """Use the link once and sign this browser in."""
    form = await request.post()
    token = str(form.get("t", ""))
    target = safe_next(str(form.get("next", "")))
    config = config_of(request)
    now = now_of(request)
    old_id = request.get(SESSION_ID)

    def sign_in(s: Session) -> str | None:
        address = auth_store.consume_login_token(s, token, now) if token else None
        if address is None:
            return None
        if old_id:
            auth_store.delete_session(s, old_id)
        return auth_store.create_session(s, address, "link", now, config.web.session_days)

    raw_id = await store_of(request).write(sign_in)
    if raw_id is None:
        return _expired(request, target)
    request[NEW_SESSION] = raw_id
    raise web.HTTPSeeOther(target or "/")


def _expired(request: web.Request, target: str) -> web.Response:
    return _no_store(
        render(request, "login_expired.html", {"next": target, "address": ""}, status=410)
    )


async def logout(request: web.Request) -> web.StreamResponse:
    raw_id = request.get(SESSION_ID)
    if raw_id:
        await store_of(request).write(lambda s: auth_store.delete_session(s, raw_id))
    request[DROP_SESSION] = True
    raise web.HTTPSeeOther("/")


def _no_store(response: web.Response) -> web.Response:
    # Pages with tokens in them stay out of caches and history.
    response.headers["Cache-Control"] = "no-store"
    return response


def add_routes(app: web.Application) -> None:
    from bridge.web.account import settings

    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_request)
    app.router.add_get("/login/confirm", confirm_page)
    app.router.add_post("/login/confirm", confirm)
    app.router.add_post("/logout", logout)
    app.on_response_prepare.append(set_cookies)
    settings.add_routes(app)
