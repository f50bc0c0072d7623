#!/usr/bin/env python3
"""API conformance harness: drives a running dstack-compatible server with the real
dstack 0.22.5 client (its CLI, its Python SDK, and raw HTTP) and checks every answer.

Usage: check.py --url URL --token ADMIN_TOKEN [-k SUBSTRING] [-v]

Run it with the Python of the oracle venv (tests/compat/setup.sh creates it); run.sh does
that and also starts the server. The expected values are what the real dstack 0.22.5
server answers. Where ../shared/spec/api.md and the real server disagree, the real server
wins and a comment says so ("REAL:").

Each case prints one line (PASS/FAIL name [: reason]); the last line is exactly
`api-compat: N passed, M failed`; the exit status is 1 on any failure.

Cases are independent of each other's success where possible, and every name they create
carries a random suffix, so the harness can run repeatedly against the same server.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import requests
import yaml

from dstack._internal.core.errors import (
    ClientError,
    ResourceExistsError,
    ResourceNotExistsError,
    ServerClientError,
    URLNotFoundError,
)
from dstack._internal.core.models.users import GlobalRole, ProjectRole
from dstack._internal.server.schemas.projects import MemberSetting
from dstack.api.server import APIClient
from dstack.version import __version__ as CLIENT_VERSION

SERVER_VERSION = "0.22.5"
SUFFIX = uuid.uuid4().hex[:8]

CASES: List[Tuple[str, Callable[["Ctx"], None]]] = []


def case(name: str):
    def deco(fn):
        CASES.append((name, fn))
        return fn

    return deco


class Ctx:
    def __init__(self, url: str, token: str, verbose: bool, server_kind: Optional[str] = None):
        self.url = url.rstrip("/")
        self.token = token
        self.verbose = verbose
        # "dstack" (the real server: no fleets, runs fail) or "rust" (ours: a `local` fleet,
        # runs execute on this machine). Only the run cases depend on it.
        self.server_kind = server_kind
        self.cleanup: List[Callable[[], None]] = []
        self.fixtures: dict = {}

    @property
    def ours(self) -> bool:
        assert self.server_kind in ("dstack", "rust"), (
            "this case needs --server-kind dstack|rust (or API_COMPAT_SERVER_KIND)"
        )
        return self.server_kind == "rust"

    # --- raw HTTP -------------------------------------------------------------------------
    def post(
        self,
        path: str,
        body: Any = None,
        token: Optional[str] = None,
        auth: bool = True,
        headers: Optional[dict] = None,
        raw: Optional[bytes] = None,
        version: Optional[str] = CLIENT_VERSION,
    ) -> requests.Response:
        h = {}
        if version is not None:
            h["X-API-VERSION"] = version
        if auth:
            h["Authorization"] = f"Bearer {token if token is not None else self.token}"
        if body is not None:
            h["Content-Type"] = "application/json"
            raw = json.dumps(body).encode()
        elif raw is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        r = requests.post(f"{self.url}{path}", data=raw, headers=h, timeout=60)
        if self.verbose:
            print(f"    POST {path} -> {r.status_code} {r.text[:300]}", file=sys.stderr)
        return r

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=60, **kw)

    # --- SDK ------------------------------------------------------------------------------
    def client(self, token: Optional[str] = None) -> APIClient:
        return APIClient(base_url=self.url, token=token if token is not None else self.token)

    # --- fixtures -------------------------------------------------------------------------
    def new_user(self, stem: str, role: str = "user") -> Tuple[str, str]:
        """Creates a user through the SDK; returns (username, token)."""
        name = f"{stem}-{SUFFIX}"
        u = self.client().users.create(name, GlobalRole(role))
        assert u.username == name, u
        self.cleanup.append(lambda: self.post("/api/users/delete", {"users": [name]}))
        # REAL: users/get_user answers the full UserWithCreds (token and ssh_private_key
        # included) to a global admin, though the SDK parses it as a plain User.
        r = self.post("/api/users/get_user", {"username": name})
        expect_status(r, 200)
        return name, r.json()["creds"]["token"]

    def new_project(self, stem: str, token: Optional[str] = None) -> str:
        name = f"{stem}-{SUFFIX}"
        p = self.client(token).projects.create(name)
        assert p.project_name == name, p
        self.cleanup.append(lambda: self.post("/api/projects/delete", {"projects_names": [name]}))
        return name


# --- assertion helpers ------------------------------------------------------------------------


def expect_status(r: requests.Response, status: int):
    assert r.status_code == status, (
        f"{r.request.method} {r.request.path_url}: expected {status}, got {r.status_code}: {r.text[:500]}"
    )


def expect_json(r: requests.Response, status: int, body: Any):
    expect_status(r, status)
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"content-type {ctype!r}"
    got = r.json()
    assert got == body, f"{r.request.path_url}: expected body {body!r}, got {got!r}"


def expect_400(r: requests.Response, msg: str, code: Optional[str]):
    """A 400 that the client turns into a ServerClientError: detail is a list of objects with
    exactly msg and code (and optionally fields), nothing else (api.md §1.6 rule 1)."""
    expect_status(r, 400)
    d = r.json()
    assert set(d) == {"detail"}, d
    assert isinstance(d["detail"], list) and d["detail"], d
    for item in d["detail"]:
        assert isinstance(item, dict), d
        assert {"msg", "code"} <= set(item) <= {"msg", "code", "fields"}, item
    assert d["detail"] == [{"msg": msg, "code": code}], d


DETAIL_DENIED = {"detail": {"msg": "Access denied", "code": None}}
DETAIL_INVALID_TOKEN = {"detail": {"msg": "Invalid token", "code": None}}
DETAIL_NOT_FOUND = {"detail": {"msg": "Not found", "code": None}}
DETAIL_NOT_AUTHENTICATED = {"detail": "Not authenticated"}


def raises(exc_type, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"expected {exc_type.__name__}, got {type(e).__name__}: {e}")
    raise AssertionError(f"expected {exc_type.__name__}, nothing was raised")


def member_roles(project) -> dict:
    return {m.user.username: m.project_role.value for m in project.members}


# ============================================================================================
# 1. Server info and non-API routes
# ============================================================================================


@case("server/get_info without auth")
def _(c: Ctx):
    r = c.post("/api/server/get_info", auth=False)
    expect_json(r, 200, {"server_version": SERVER_VERSION})


@case("server/get_info without X-API-VERSION")
def _(c: Ctx):
    r = c.post("/api/server/get_info", auth=False, version=None)
    expect_json(r, 200, {"server_version": SERVER_VERSION})


@case("GET /healthcheck")
def _(c: Ctx):
    expect_json(c.get("/healthcheck"), 200, {"status": "running"})


@case("GET / answers 200 without redirect")
def _(c: Ctx):
    # `dstack login` uses the final URL after redirects as the base URL (api.md §1.8).
    r = c.get("/", allow_redirects=True)
    expect_status(r, 200)
    assert r.url.rstrip("/") == c.url, f"GET / ended at {r.url}"


# ============================================================================================
# 2. Authentication and the client-version check
# ============================================================================================


@case("auth: no Authorization -> 401 Not authenticated")
def _(c: Ctx):
    expect_json(c.post("/api/users/get_my_user", auth=False), 401, DETAIL_NOT_AUTHENTICATED)


@case("auth: empty bearer and non-bearer scheme -> 401")
def _(c: Ctx):
    for value in ("Bearer ", "Basic Zm9vOmJhcg=="):
        r = c.post("/api/users/get_my_user", auth=False, headers={"Authorization": value})
        expect_json(r, 401, DETAIL_NOT_AUTHENTICATED)


@case("auth: bad token -> 403 Invalid token")
def _(c: Ctx):
    r = c.post("/api/users/get_my_user", token=f"bad-{SUFFIX}")
    expect_json(r, 403, DETAIL_INVALID_TOKEN)


@case("auth: no token on a project route -> 401 before the project lookup")
def _(c: Ctx):
    r = c.post(f"/api/project/nope-{SUFFIX}/fleets/list", auth=False)
    expect_json(r, 401, DETAIL_NOT_AUTHENTICATED)
    r = c.post(f"/api/project/nope-{SUFFIX}/fleets/list", token=f"bad-{SUFFIX}")
    expect_json(r, 403, DETAIL_INVALID_TOKEN)


@case("auth: SDK with a bad token -> ClientError 'Access ... denied'")
def _(c: Ctx):
    e = raises(ClientError, c.client(f"bad-{SUFFIX}").users.get_my_user)
    assert "is denied" in str(e), e


@case("version: X-API-VERSION 0.23.0 -> 400 incompatible")
def _(c: Ctx):
    msg = (
        f"The client/CLI version (0.23.0) is incompatible with the server version"
        f" ({SERVER_VERSION})."
    )
    expect_400(c.post("/api/users/get_my_user", version="0.23.0"), msg, "error")
    # The check runs before authentication and on unauthenticated routes too.
    expect_400(c.post("/api/server/get_info", auth=False, version="0.23.0"), msg, "error")
    expect_400(c.post("/api/users/get_my_user", token="bad", version="0.23.0"), msg, "error")


@case("version: incompatible majors (1, 1.0.0) -> 400")
def _(c: Ctx):
    for v in ("1", "1.0.0"):
        msg = (
            f"The client/CLI version ({v}) is incompatible with the server version"
            f" ({SERVER_VERSION})."
        )
        expect_400(c.post("/api/server/get_info", auth=False, version=v), msg, "error")


@case("version: garbage -> 400 Invalid version")
def _(c: Ctx):
    # REAL: code is null here, unlike the incompatibility error's "error".
    expect_400(c.post("/api/users/get_my_user", version="garbage"), "Invalid version: garbage", None)
    expect_400(
        c.post("/api/server/get_info", auth=False, version="garbage"),
        "Invalid version: garbage",
        None,
    )
    # REAL: a present-but-empty header is checked too (an absent one is not).
    expect_400(c.post("/api/server/get_info", auth=False, version=""), "Invalid version: ", None)


@case("version: accepted values (older, same minor, dev, latest)")
def _(c: Ctx):
    for v in ("0.18.0", "0.22.9", "0.22.6rc1", "0.0.0", "0.0.0.dev1", "latest"):
        r = c.post("/api/server/get_info", auth=False, version=v)
        expect_json(r, 200, {"server_version": SERVER_VERSION})
    r = c.post("/api/users/get_my_user", version="0.22.9")
    expect_status(r, 200)


# ============================================================================================
# 3. The CLI (isolated HOME)
# ============================================================================================


def run_cli(
    c: Ctx, home: str, *args: str, cwd: Optional[str] = None, env_extra: Optional[dict] = None
) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "dstack"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DSTACK_") or k == "DSTACK_CLI_LOG_LEVEL"
    }
    env.update(HOME=home, COLUMNS="200", NO_COLOR="1", TERM="dumb", **(env_extra or {}))
    p = subprocess.run(
        [str(exe), *args], env=env, cwd=cwd or home, capture_output=True, text=True, timeout=120
    )
    if c.verbose:
        print(f"    dstack {' '.join(args)} -> {p.returncode}\n{p.stdout}{p.stderr}", file=sys.stderr)
    return p


@case("CLI: project add writes config.yml; project list shows it")
def _(c: Ctx):
    home = tempfile.mkdtemp(prefix="dstack-api-compat-home-")
    try:
        p = run_cli(c, home, "project", "add", "--name", "main", "--url", c.url, "--token", c.token, "-y")
        assert p.returncode == 0, f"project add failed ({p.returncode}): ...{(p.stdout + p.stderr)[-800:]}"
        cfg = yaml.safe_load((Path(home) / ".dstack" / "config.yml").read_text())
        projects = cfg["projects"]
        assert projects == [
            {"name": "main", "url": c.url, "token": c.token, "default": True}
        ], projects
        p = run_cli(c, home, "project", "list")
        assert p.returncode == 0, f"project list failed: ...{(p.stdout + p.stderr)[-800:]}"
        rows = [l.split() for l in p.stdout.splitlines()]
        assert any(r[:2] == ["main", c.url] for r in rows), p.stdout
    finally:
        shutil.rmtree(home, ignore_errors=True)


@case("CLI: project add with a bad token / unknown project fails")
def _(c: Ctx):
    home = tempfile.mkdtemp(prefix="dstack-api-compat-home-")
    try:
        p = run_cli(c, home, "project", "add", "--name", "main", "--url", c.url, "--token", "bad", "-y")
        out = p.stdout + p.stderr
        assert p.returncode == 1, f"rc {p.returncode}: {out}"
        assert "is denied" in " ".join(out.split()), out
        p = run_cli(
            c, home, "project", "add", "--name", f"nope-{SUFFIX}", "--url", c.url, "--token", c.token, "-y"
        )
        out = p.stdout + p.stderr
        assert p.returncode == 1, f"rc {p.returncode}: {out}"
        assert "Status code 404" in out, out
        assert not (Path(home) / ".dstack" / "config.yml").exists(), "config written on failure"
    finally:
        shutil.rmtree(home, ignore_errors=True)


# ============================================================================================
# 4. The SDK: users and projects
# ============================================================================================


@case("SDK: users.get_my_user is the admin with creds")
def _(c: Ctx):
    me = c.client().users.get_my_user()
    assert me.username == "admin", me.username
    assert me.global_role == GlobalRole.ADMIN, me.global_role
    assert me.creds.token == c.token
    assert me.active is True
    assert me.permissions.can_create_projects is True
    assert me.created_at is not None and me.created_at.tzinfo is not None, me.created_at
    # api.md §3.1: RSA keypair, public key ends with " <username>\n", private key PKCS#8 PEM.
    assert me.ssh_public_key and me.ssh_public_key.startswith("ssh-rsa "), me.ssh_public_key
    assert me.ssh_public_key.endswith(" admin\n"), repr(me.ssh_public_key[-20:])
    assert me.ssh_private_key and me.ssh_private_key.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert me.ssh_private_key.endswith("-----END PRIVATE KEY-----\n")
    # Stable across calls.
    again = c.client().users.get_my_user()
    assert again.id == me.id and again.ssh_public_key == me.ssh_public_key


@case("HTTP: get_my_user has exactly the UserWithCreds fields")
def _(c: Ctx):
    r = c.post("/api/users/get_my_user")
    expect_status(r, 200)
    d = r.json()
    assert set(d) == {
        "id", "username", "created_at", "global_role", "email", "active", "permissions",
        "ssh_public_key", "creds", "ssh_private_key",
    }, sorted(d)
    assert d["creds"] == {"token": c.token}
    assert d["permissions"] == {"can_create_projects": True}
    assert d["email"] is None
    assert str(uuid.UUID(d["id"])) == d["id"], d["id"]
    assert d["created_at"].endswith("Z"), d["created_at"]


@case("SDK: projects.list contains main; projects.get('main') has the admin as member")
def _(c: Ctx):
    api = c.client()
    projects = api.projects.list()
    assert isinstance(projects, list)
    main = [p for p in projects if p.project_name == "main"]
    assert len(main) == 1, [p.project_name for p in projects]
    assert main[0].owner.username == "admin"
    # REAL: projects/list answers members: [] and backends: [] (members are only filled when
    # the request names a `username`); api.md §2 says so too.
    assert main[0].members == [], main[0].members
    p = api.projects.get("main")
    assert p.project_name == "main" and p.project_id == main[0].project_id
    assert p.owner.username == "admin"
    assert p.is_public is False
    assert p.backends == []
    assert member_roles(p) == {"admin": "admin"}, member_roles(p)
    m = p.members[0]
    assert m.permissions.can_manage_ssh_fleets is True and m.permissions.can_manage_secrets is True


@case("SDK: projects.list with return_total_count")
def _(c: Ctx):
    info = c.client().projects.list(return_total_count=True)
    names = [p.project_name for p in info.projects]
    assert "main" in names
    assert info.total_count == len(info.projects), (info.total_count, names)


@case("SDK: users.create, users.list, get_user; duplicate -> ResourceExistsError")
def _(c: Ctx):
    name, token = c.new_user("compat-u")
    api = c.client()
    users = api.users.list()
    by_name = {u.username: u for u in users}
    assert name in by_name and "admin" in by_name, list(by_name)
    u = by_name[name]
    assert u.global_role == GlobalRole.USER and u.active is True and u.email is None
    assert u.ssh_public_key and u.ssh_public_key.endswith(f" {name}\n"), u.ssh_public_key
    info = api.users.list(return_total_count=True)
    assert info.total_count == len(info.users) and name in [x.username for x in info.users]
    got = api.users.get_user(name)
    assert got.username == name and got.id == u.id
    # The new user's token works and is theirs.
    me = c.client(token).users.get_my_user()
    assert me.username == name and me.global_role == GlobalRole.USER and me.creds.token == token
    e = raises(ResourceExistsError, api.users.create, name, GlobalRole.USER)
    assert e.msg == "Resource exists", e.msg
    expect_400(
        c.post("/api/users/create", {"username": name, "global_role": "user"}),
        "Resource exists",
        "resource_exists",
    )


@case("users: a non-admin sees only itself and cannot create/delete users")
def _(c: Ctx):
    name, token = c.new_user("compat-plain")
    users = c.client(token).users.list()
    assert [u.username for u in users] == [name], [u.username for u in users]
    r = c.post("/api/users/create", {"username": f"x-{SUFFIX}", "global_role": "user"}, token=token)
    expect_json(r, 403, DETAIL_DENIED)
    r = c.post("/api/users/delete", {"users": ["admin"]}, token=token)
    expect_json(r, 403, DETAIL_DENIED)
    r = c.post("/api/users/refresh_token", {"username": "admin"}, token=token)
    expect_json(r, 403, DETAIL_DENIED)
    # REAL: a non-admin asking for another (existing) user gets 400 resource_not_exists, not 403.
    expect_400(
        c.post("/api/users/get_user", {"username": "admin"}, token=token),
        "Resource not found",
        "resource_not_exists",
    )


@case("SDK: users.refresh_token returns a new working token; the old one stops working")
def _(c: Ctx):
    name, old = c.new_user("compat-rt")
    fresh = c.client(old).users.refresh_token(name)
    assert fresh.username == name
    new = fresh.creds.token
    assert new and new != old
    assert c.client(new).users.get_my_user().username == name
    expect_json(c.post("/api/users/get_my_user", token=old), 403, DETAIL_INVALID_TOKEN)
    # An admin may refresh another user's token.
    again = c.client().users.refresh_token(name)
    assert again.creds.token not in (old, new)
    expect_json(c.post("/api/users/get_my_user", token=new), 403, DETAIL_INVALID_TOKEN)
    assert c.client(again.creds.token).users.get_my_user().username == name


@case("projects: a user's own project; user sees only its own, admin sees all")
def _(c: Ctx):
    name, token = c.new_user("compat-owner")
    proj = c.new_project("compat-p", token=token)
    p = c.client(token).projects.get(proj)
    assert p.owner.username == name
    assert member_roles(p) == {name: "admin"}, member_roles(p)
    mine = [x.project_name for x in c.client(token).projects.list()]
    assert mine == [proj], mine
    mine = [x.project_name for x in c.client(token).projects.list(include_not_joined=False)]
    assert mine == [proj], mine
    everything = [x.project_name for x in c.client().projects.list()]
    assert proj in everything and "main" in everything, everything
    # Newest first by default.
    assert everything.index(proj) < everything.index("main"), everything
    # The admin can read it without being a member.
    assert c.client().projects.get(proj).project_name == proj


@case("projects: a non-member gets 403 on a private project")
def _(c: Ctx):
    _, token = c.new_user("compat-outsider")
    expect_json(c.post("/api/projects/main/get", token=token), 403, DETAIL_DENIED)
    expect_json(c.post("/api/project/main/fleets/list", token=token), 403, DETAIL_DENIED)
    e = raises(ClientError, c.client(token).projects.get, "main")
    assert "is denied" in str(e), e


@case("projects: set_members / add_members / remove_members change membership")
def _(c: Ctx):
    a, ta = c.new_user("compat-ma")
    b, tb = c.new_user("compat-mb")
    proj = c.new_project("compat-mem")
    api = c.client()
    p = api.projects.set_members(
        proj,
        [
            MemberSetting(username="admin", project_role=ProjectRole.ADMIN),
            MemberSetting(username=a, project_role=ProjectRole.USER),
        ],
    )
    assert member_roles(p) == {"admin": "admin", a: "user"}, member_roles(p)
    assert member_roles(api.projects.get(proj)) == {"admin": "admin", a: "user"}
    # a is a member now; b is not.
    assert c.client(ta).projects.get(proj).project_name == proj
    expect_json(c.post(f"/api/projects/{proj}/get", token=tb), 403, DETAIL_DENIED)
    assert [x.project_name for x in c.client(ta).projects.list()] == [proj]

    p = api.projects.add_members(proj, [MemberSetting(username=b, project_role=ProjectRole.MANAGER)])
    assert member_roles(p) == {"admin": "admin", a: "user", b: "manager"}, member_roles(p)
    assert c.client(tb).projects.get(proj).project_name == proj
    # add_members on an existing member updates the role.
    p = api.projects.add_member(proj, a, ProjectRole.MANAGER)
    assert member_roles(p)[a] == "manager", member_roles(p)
    # Default permissions: everyone may manage SSH fleets; only global admins and project
    # admins may manage secrets (allow_managers_manage_secrets defaults to false).
    perms = {
        m.user.username: (m.permissions.can_manage_ssh_fleets, m.permissions.can_manage_secrets)
        for m in p.members
    }
    assert perms == {"admin": (True, True), a: (True, False), b: (True, False)}, perms

    p = api.projects.remove_members(proj, [a])
    assert member_roles(p) == {"admin": "admin", b: "manager"}, member_roles(p)
    expect_json(c.post(f"/api/projects/{proj}/get", token=ta), 403, DETAIL_DENIED)

    # Self-leave is allowed to a non-admin member.
    p = c.client(tb).projects.remove_member(proj, b)
    assert member_roles(p) == {"admin": "admin"}, member_roles(p)

    # A non-member cannot manage members: the permission check answers the wrapped 403.
    r = c.post(
        f"/api/projects/{proj}/add_members",
        {"members": [{"username": a, "project_role": "admin"}]},
        token=ta,
    )
    expect_json(r, 403, DETAIL_DENIED)

    # Errors from the membership service itself.
    expect_400(
        c.post(f"/api/projects/{proj}/remove_members", {"usernames": [a]}),
        f"User is not a member of this project: {a}",
        "error",
    )
    expect_400(
        c.post(f"/api/projects/{proj}/remove_members", {"usernames": [f"ghost-{SUFFIX}"]}),
        f"User not found: ghost-{SUFFIX}",
        "error",
    )
    expect_400(
        c.post(f"/api/projects/{proj}/remove_members", {"usernames": ["admin"]}),
        "Cannot leave project: you are the last admin",
        "error",
    )
    # Removing the only admin on someone else's behalf is refused differently.
    api.projects.add_member(proj, a, ProjectRole.USER)
    expect_400(
        c.post(f"/api/projects/{proj}/remove_members", {"usernames": ["admin", a]}),
        "Cannot remove all project admins",
        "error",
    )


@case("projects: role checks on membership changes (dependency vs service 403)")
def _(c: Ctx):
    u, tu = c.new_user("compat-ua")
    m, tm = c.new_user("compat-mgr")
    proj = c.new_project("compat-ur")
    api = c.client()
    api.projects.add_member(proj, u, ProjectRole.USER)
    api.projects.add_member(proj, m, ProjectRole.MANAGER)
    # A user-role member fails the route's permission dependency: the wrapped 403.
    r = c.post(
        f"/api/projects/{proj}/add_members",
        {"members": [{"username": "admin", "project_role": "user"}]},
        token=tu,
    )
    expect_json(r, 403, DETAIL_DENIED)
    # REAL: a 403 raised inside a service (ForbiddenError) is NOT wrapped in "detail": the
    # body is the bare {"msg","code"} object, often with a specific message. api.md §1.6
    # does not mention this. The client only looks at the status, so both work with it.
    r = c.post(
        f"/api/projects/{proj}/add_members",
        {"members": [{"username": u, "project_role": "admin"}]},
        token=tm,
    )
    expect_json(r, 403, {"msg": "Access denied: only global admins can add project admins", "code": None})
    r = c.post(
        f"/api/projects/{proj}/set_members",
        {"members": [{"username": m, "project_role": "admin"}]},
        token=tm,
    )
    expect_json(r, 403, {"msg": "Access denied: changing project admins", "code": None})
    # A manager may add a plain user.
    p = c.client(tm).projects.add_members(
        proj, [MemberSetting(username=u, project_role=ProjectRole.USER)]
    )
    assert member_roles(p) == {"admin": "admin", u: "user", m: "manager"}, member_roles(p)
    expect_400(
        c.post(
            f"/api/projects/{proj}/set_members",
            {"members": [{"username": u, "project_role": "user"}, {"username": u, "project_role": "user"}]},
        ),
        "Cannot add same user multiple times",
        "error",
    )


@case("projects.delete: by a non-owner -> 403 bare body; by the owner -> gone")
def _(c: Ctx):
    name, token = c.new_user("compat-del")
    proj = c.new_project("compat-del", token=token)
    # REAL: unwrapped 403 body (ForbiddenError from the service), see above.
    r = c.post("/api/projects/delete", {"projects_names": ["main"]}, token=token)
    expect_json(r, 403, {"msg": "Access denied", "code": None})
    c.client(token).projects.delete([proj])
    expect_json(c.post(f"/api/projects/{proj}/get"), 404, DETAIL_NOT_FOUND)
    assert proj not in [x.project_name for x in c.client().projects.list()]
    # The name can be reused after deletion.
    c.new_project("compat-del", token=token)
    assert c.client(token).projects.get(proj).project_name == proj


@case("users.delete: user is gone, token stops working, admin cannot be deleted")
def _(c: Ctx):
    name, token = c.new_user("compat-gone")
    r = c.post("/api/users/delete", {"users": [name]})
    expect_json(r, 200, None)
    expect_json(c.post("/api/users/get_my_user", token=token), 403, DETAIL_INVALID_TOKEN)
    assert name not in [u.username for u in c.client().users.list()]
    expect_400(
        c.post("/api/users/get_user", {"username": name}), "Resource not found", "resource_not_exists"
    )
    expect_400(
        c.post("/api/users/delete", {"users": ["admin"]}), "User 'admin' cannot be deleted", "error"
    )


@case("projects: public project (update is_public, non-member read, self-join as user)")
def _(c: Ctx):
    u, tu = c.new_user("compat-pub")
    proj = c.new_project("compat-pub")
    expect_json(c.post(f"/api/projects/{proj}/get", token=tu), 403, DETAIL_DENIED)
    r = c.post(f"/api/projects/{proj}/update", {"is_public": True})
    expect_status(r, 200)
    assert r.json()["is_public"] is True, r.json()
    # A public project is readable by anyone, and listed for non-members by default.
    p = c.client(tu).projects.get(proj)
    assert p.is_public is True and u not in member_roles(p)
    assert proj in [x.project_name for x in c.client(tu).projects.list()]
    assert proj not in [x.project_name for x in c.client(tu).projects.list(include_not_joined=False)]
    # Self-join to a public project only as "user".
    r = c.post(
        f"/api/projects/{proj}/add_members",
        {"members": [{"username": u, "project_role": "admin"}]},
        token=tu,
    )
    expect_json(r, 403, {"msg": "Access denied: can only join public projects as user role", "code": None})
    p = c.client(tu).projects.add_member(proj, u, ProjectRole.USER)
    assert member_roles(p) == {"admin": "admin", u: "user"}, member_roles(p)
    # A plain member cannot update the project.
    expect_json(c.post(f"/api/projects/{proj}/update", {"is_public": False}, token=tu), 403, DETAIL_DENIED)


@case("users: update role, refresh_ssh_key")
def _(c: Ctx):
    name, token = c.new_user("compat-upd")
    u = c.client().users.update(name, GlobalRole.ADMIN)
    assert u.username == name and u.global_role == GlobalRole.ADMIN
    assert c.client(token).users.get_my_user().global_role == GlobalRole.ADMIN
    old_key = c.client(token).users.get_my_user().ssh_public_key
    r = c.post("/api/users/refresh_ssh_key", {"username": name}, token=token)
    expect_status(r, 200)
    d = r.json()
    assert d["username"] == name and d["creds"] == {"token": token}, d
    assert d["ssh_public_key"] != old_key and d["ssh_public_key"].endswith(f" {name}\n")
    assert c.client(token).users.get_my_user().ssh_public_key == d["ssh_public_key"]
    expect_400(
        c.post("/api/users/update", {"username": f"ghost-{SUFFIX}", "global_role": "user"}),
        "Resource not found",
        "resource_not_exists",
    )


@case("SDK: repos.init (virtual and remote) / list / get_with_creds / delete")
def _(c: Ctx):
    from dstack._internal.core.models.repos.remote import RemoteRepoCreds, RemoteRepoInfo
    from dstack._internal.core.models.repos.virtual import VirtualRepoInfo

    api = c.client()
    project = f"repos-{SUFFIX}"
    expect_status(c.post("/api/projects/create", {"project_name": project}), 200)
    c.cleanup.append(lambda: c.post("/api/projects/delete", {"projects_names": [project]}))
    api.repos.init(project, "none", VirtualRepoInfo())
    creds = RemoteRepoCreds(clone_url="https://example.com/org/r.git", private_key=None, oauth_token="tok")
    api.repos.init(project, "r-1", RemoteRepoInfo(repo_name="r"), creds)
    heads = sorted(api.repos.list(project), key=lambda h: h.repo_id)
    assert [h.repo_id for h in heads] == ["none", "r-1"], heads
    assert heads[0].repo_info.repo_type == "virtual" and heads[1].repo_info.repo_name == "r", heads
    got = api.repos.get_with_creds(project, "r-1")
    assert got.repo_creds is not None and got.repo_creds.oauth_token == "tok", got
    plain = api.repos.get(project, "r-1")
    assert plain.repo_id == "r-1", plain
    r = c.post(f"/api/project/{project}/repos/get", {"repo_id": "nope", "include_creds": False})
    expect_json(r, 400, {"detail": [{"msg": "Resource not found", "code": "resource_not_exists"}]})
    api.repos.delete(project, ["r-1"])
    assert [h.repo_id for h in api.repos.list(project)] == ["none"]


@case("CLI: secret set/list/get/delete")
def _(c: Ctx):
    home = tempfile.mkdtemp(prefix="dstack-api-compat-home-")
    name = f"tok_{SUFFIX}".replace("-", "_")
    try:
        p = run_cli(c, home, "project", "add", "--name", "main", "--url", c.url, "--token", c.token, "-y")
        assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
        p = run_cli(c, home, "secret", "set", name, "s3cr3t-value")
        assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
        p = run_cli(c, home, "secret", "list")
        assert p.returncode == 0 and name in p.stdout, p.stdout + p.stderr
        assert "s3cr3t-value" not in p.stdout, "list must not show values"
        p = run_cli(c, home, "secret", "get", name)
        assert p.returncode == 0 and "s3cr3t-value" in p.stdout, p.stdout + p.stderr
        p = run_cli(c, home, "secret", "delete", name, "-y")
        assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
        p = run_cli(c, home, "secret", "list")
        assert name not in p.stdout, p.stdout
        p = run_cli(c, home, "secret", "get", name)
        assert p.returncode != 0 or "not found" in (p.stdout + p.stderr).lower(), p.stdout + p.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)


@case("SDK/HTTP: secrets are for project admins; managers get the handler's bare 403")
def _(c: Ctx):
    owner, owner_token = c.new_user("sec-owner")
    manager, manager_token = c.new_user("sec-manager")
    project = f"sec-{SUFFIX}"
    r = c.post("/api/projects/create", {"project_name": project}, token=owner_token)
    expect_status(r, 200)
    c.cleanup.append(lambda: c.post("/api/projects/delete", {"projects_names": [project]}))
    r = c.post(
        f"/api/projects/{project}/add_members",
        {"members": [{"username": manager, "project_role": "manager"}]},
        token=owner_token,
    )
    expect_status(r, 200)
    r = c.post(f"/api/project/{project}/secrets/create_or_update", {"name": "k", "value": "v"}, token=owner_token)
    expect_status(r, 200)
    d = r.json()
    assert d["name"] == "k" and d["value"] == "v", d
    r = c.post(f"/api/project/{project}/secrets/list", token=owner_token)
    expect_json(r, 200, [{"id": d["id"], "name": "k", "value": None}])
    r = c.post(f"/api/project/{project}/secrets/list", token=manager_token)
    expect_json(r, 403, {"msg": "Access denied", "code": None})
    r = c.post(f"/api/project/{project}/secrets/delete", {"secrets_names": ["k", "zz"]}, token=owner_token)
    expect_json(r, 400, {"detail": [{"msg": "Secrets not found: zz", "code": "resource_not_exists"}]})


# ============================================================================================
# 5. The error contract
# ============================================================================================


@case("errors: unknown project -> 404 Not found (wrapped)")
def _(c: Ctx):
    expect_json(c.post(f"/api/projects/nope-{SUFFIX}/get"), 404, DETAIL_NOT_FOUND)
    expect_json(c.post(f"/api/project/nope-{SUFFIX}/fleets/list"), 404, DETAIL_NOT_FOUND)
    e = raises(URLNotFoundError, c.client().projects.get, f"nope-{SUFFIX}")
    assert "Status code 404" in str(e), e


@case("errors: create an existing project -> 400 resource_exists")
def _(c: Ctx):
    expect_400(
        c.post("/api/projects/create", {"project_name": "main"}), "Resource exists", "resource_exists"
    )
    e = raises(ResourceExistsError, c.client().projects.create, "main")
    assert e.msg == "Resource exists"


@case("errors: delete unknown projects/users -> 400 error")
def _(c: Ctx):
    expect_400(
        c.post("/api/projects/delete", {"projects_names": [f"nope-{SUFFIX}"]}),
        "Failed to delete non-existent projects",
        "error",
    )
    expect_400(
        c.post("/api/users/delete", {"users": [f"nope-{SUFFIX}"]}),
        "Failed to delete non-existent users",
        "error",
    )
    e = raises(ServerClientError, c.client().projects.delete, [f"nope-{SUFFIX}"])
    assert e.msg == "Failed to delete non-existent projects"


@case("errors: users/get_user of a missing user -> 400 resource_not_exists")
def _(c: Ctx):
    expect_400(
        c.post("/api/users/get_user", {"username": f"ghost-{SUFFIX}"}),
        "Resource not found",
        "resource_not_exists",
    )
    e = raises(ResourceNotExistsError, c.client().users.get_user, f"ghost-{SUFFIX}")
    assert e.msg == "Resource not found"


@case("errors: malformed JSON -> 422 json_invalid")
def _(c: Ctx):
    r = c.post("/api/projects/create", raw=b"{bad")
    expect_json(
        r,
        422,
        {
            "detail": [
                {
                    "type": "json_invalid",
                    "loc": ["body", 1],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": "Expecting property name enclosed in double quotes"},
                }
            ]
        },
    )


@case("errors: missing body / missing field / extra field -> 422")
def _(c: Ctx):
    r = c.post("/api/users/get_user")
    expect_json(
        r, 422, {"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]}
    )
    r = c.post("/api/users/get_user", {})
    expect_json(
        r,
        422,
        {"detail": [{"type": "missing", "loc": ["body", "username"], "msg": "Field required", "input": {}}]},
    )
    r = c.post("/api/users/get_user", {"username": "admin", "bogus": 1})
    expect_json(
        r,
        422,
        {
            "detail": [
                {
                    "type": "extra_forbidden",
                    "loc": ["body", "bogus"],
                    "msg": "Extra inputs are not permitted",
                    "input": 1,
                }
            ]
        },
    )


@case("errors: unknown API paths (POST -> 405, GET -> 404)")
def _(c: Ctx):
    # REAL: with the UI mounted, an unknown POST path answers 405 and an unknown GET under
    # /api answers 404 {"detail":"Not Found"} -- also for a known POST-only route.
    expect_json(c.post("/api/nope"), 405, {"detail": "Method Not Allowed"})
    expect_json(c.post(f"/api/project/main/nope"), 405, {"detail": "Method Not Allowed"})
    expect_json(c.get("/api/nope"), 404, {"detail": "Not Found"})
    expect_json(c.get("/api/users/list"), 404, {"detail": "Not Found"})
    expect_json(c.post("/healthcheck"), 405, {"detail": "Method Not Allowed"})


# ============================================================================================
# 6. Runs: the dstack CLI (apply, ps, logs, stop) and the SDK (dstack.api.Client)
# ============================================================================================
#
# The two servers legitimately differ here, and each case asserts each side exactly:
# - the real dstack server (`--server-kind dstack`) has no fleets, so every run fails about
#   5 s after submission (the job: `failed_to_start_due_to_no_capacity`, "no fleets") and is
#   `failed` some 10 s later;
# - ours (`--server-kind rust`) has the `local` fleet (this machine, through dstack-shim), so
#   a task without `image:` runs as a host process and prints its output.
# Runs go to the default project `main`, where our local fleet lives.

RUNS_PROJECT = "main"
RUN_WAIT_S = 120
NO_FLEETS_MESSAGE = (
    "No matching fleet found. Possible reasons: https://dstack.ai/docs/guides/troubleshooting/#no-fleets"
)
# Small enough for any CI machine (cpu/memory/disk minimums only).
SMALL_RESOURCES = {"cpu": "1..", "memory": "0.5GB..", "disk": "1GB.."}


def new_run_name(stem: str) -> str:
    return f"{stem}-{SUFFIX}-{uuid.uuid4().hex[:4]}"


def track_run(c: Ctx, name: str):
    """At the end: abort the run if it is still active, then delete it once finished."""

    def undo():
        from dstack._internal.core.errors import ResourceNotExistsError as NotExists

        api = c.client()
        api.runs.stop(RUNS_PROJECT, [name], abort=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if api.runs.get(RUNS_PROJECT, name).status.is_finished():
                    break
            except NotExists:
                return
            time.sleep(0.5)
        api.runs.delete(RUNS_PROJECT, [name])

    c.cleanup.append(undo)


def wait_run(c: Ctx, name: str, until: Callable[[Any], bool], what: str, timeout: float = RUN_WAIT_S):
    """Polls runs/get until `until(run)`; returns the run and the statuses seen, in order."""
    api = c.client()
    seen: List[str] = []
    deadline = time.monotonic() + timeout
    while True:
        run = api.runs.get(RUNS_PROJECT, name)
        if not seen or seen[-1] != run.status.value:
            seen.append(run.status.value)
        if until(run):
            return run, seen
        assert time.monotonic() < deadline, f"run {name} not {what} after {timeout} s; statuses {seen}"
        time.sleep(0.5)


def wait_finished(c: Ctx, name: str):
    return wait_run(c, name, lambda r: r.status.is_finished(), "finished")


def cli_home(c: Ctx) -> str:
    """A temporary HOME whose ~/.dstack/config.yml has the server as the default project."""
    home = tempfile.mkdtemp(prefix="dstack-api-compat-home-")
    c.cleanup.append(lambda: shutil.rmtree(home, ignore_errors=True))
    p = run_cli(c, home, "project", "add", "--name", RUNS_PROJECT, "--url", c.url, "--token", c.token, "-y")
    assert p.returncode == 0, f"project add failed: {(p.stdout + p.stderr)[-800:]}"
    return home


def task_dir(c: Ctx, name: str, commands: List[str]) -> str:
    """A temporary working directory (not a git repo) with a task.yml."""
    d = tempfile.mkdtemp(prefix="dstack-api-compat-task-")
    c.cleanup.append(lambda: shutil.rmtree(d, ignore_errors=True))
    conf = {"type": "task", "name": name, "commands": commands, "resources": SMALL_RESOURCES}
    (Path(d) / "task.yml").write_text(yaml.safe_dump(conf, sort_keys=False))
    return d


def cli_apply(c: Ctx, home: str, workdir: str, name: str) -> subprocess.CompletedProcess:
    track_run(c, name)
    return run_cli(c, home, "apply", "-d", "-y", "-f", "task.yml", cwd=workdir)


def hello_task(c: Ctx) -> dict:
    """One `echo hello-from-task` run submitted with `dstack apply -d -y`, shared by the
    CLI cases below (each still works alone, e.g. under -k)."""
    if "hello" not in c.fixtures:
        name = new_run_name("hello")
        home = cli_home(c)
        workdir = task_dir(c, name, ["echo hello-from-task"])
        c.fixtures["hello"] = {
            "name": name,
            "home": home,
            "workdir": workdir,
            "apply": cli_apply(c, home, workdir, name),
        }
    return c.fixtures["hello"]


def expect_finished(c: Ctx, run):
    """The final state of a run of a short successful task: done on ours, no fleets on dstack's."""
    from dstack._internal.core.models.runs import JobStatus, JobTerminationReason, RunTerminationReason

    sub = run.latest_job_submission
    assert sub is not None and len(run.jobs) == 1 and len(run.jobs[0].job_submissions) == 1, run.jobs
    if c.ours:
        got = (run.status.value, run.status_message, run.termination_reason)
        assert got == ("done", "done", RunTerminationReason.ALL_JOBS_DONE), got
        got = (sub.status, sub.status_message, sub.termination_reason, sub.exit_status)
        assert got == (JobStatus.DONE, "exited (0)", JobTerminationReason.DONE_BY_RUNNER, 0), got
        assert run.fleet is not None and run.fleet.name == "local", run.fleet
        assert sub.job_provisioning_data is not None and sub.finished_at is not None, sub
    else:
        got = (run.status.value, run.status_message, run.termination_reason)
        assert got == ("failed", "failed", RunTerminationReason.JOB_FAILED), got
        got = (sub.status, sub.status_message, sub.termination_reason, sub.termination_reason_message)
        assert got == (
            JobStatus.FAILED,
            "no fleets",
            JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY,
            NO_FLEETS_MESSAGE,
        ), got
        assert sub.exit_status is None and sub.job_provisioning_data is None, sub
        assert run.fleet is None, run.fleet


@case("CLI: apply -d -y -f task.yml submits and detaches")
def _(c: Ctx):
    t = hello_task(c)
    p, name = t["apply"], t["name"]
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"rc {p.returncode}: {out[-1500:]}"
    assert f"Run {name} submitted, detaching..." in out, out[-1500:]
    # The plan table (requirements come from the server's job spec).
    lines = [" ".join(line.split()) for line in out.splitlines()]
    for line in (
        "Project main",
        "User admin",
        "Type task (nodes=1)",
        "Resources cpu=x86:1.. mem=0.5GB.. disk=1GB.. gpu=nvidia:0..",
        "Spot policy on-demand",
        "Max price off",
        "Retry policy off",
        "Idle duration 5m",
        "Max duration off",
    ):
        assert line in lines, f"no {line!r} in: {out[-1500:]}"
    no_fleets = "The project has no fleets. Create one before submitting a run."
    if c.ours:
        # The local fleet offers this machine: an offer table, no warning.
        assert no_fleets not in out, out
    else:
        # REAL: no offers, and fleets/list answers [] -> the CLI warns, and submits anyway.
        assert no_fleets in out, out
    run = c.client().runs.get(RUNS_PROJECT, name)
    assert run.run_spec.configuration_path == "task.yml", run.run_spec.configuration_path
    assert run.run_spec.configuration.commands == ["echo hello-from-task"], run.run_spec.configuration
    assert run.run_spec.repo_id == "none" and run.run_spec.repo_data.repo_type == "virtual", run.run_spec
    assert run.user == "admin" and run.project_name == RUNS_PROJECT, run


@case("CLI: ps -a --json and ps -a show the finished run")
def _(c: Ctx):
    t = hello_task(c)
    name = t["name"]
    wait_finished(c, name)
    p = run_cli(c, t["home"], "ps", "-a", "--json", cwd=t["workdir"])
    assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
    doc = json.loads(p.stdout)
    assert set(doc) == {"project", "runs"} and doc["project"] == RUNS_PROJECT, sorted(doc)
    mine = [r for r in doc["runs"] if r["run_spec"]["run_name"] == name]
    assert len(mine) == 1, [r["run_spec"]["run_name"] for r in doc["runs"]]
    from dstack._internal.core.models.runs import Run as RunModel

    expect_finished(c, RunModel.model_validate(mine[0]))
    # The table: the run's row shows the latest job submission's status message.
    p = run_cli(c, t["home"], "ps", "-a", cwd=t["workdir"])
    assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
    header = p.stdout.splitlines()[0].split()
    assert header == ["NAME", "BACKEND", "GPU", "PRICE", "STATUS", "SUBMITTED"], p.stdout
    rows = [" ".join(line.split()) for line in p.stdout.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1, p.stdout
    status = "exited (0)" if c.ours else "no fleets"
    assert f" {status} " in rows[0], rows[0]


@case("CLI: logs RUN prints the task's output; an unknown run fails")
def _(c: Ctx):
    t = hello_task(c)
    name = t["name"]
    wait_finished(c, name)
    p = run_cli(c, t["home"], "logs", name, cwd=t["workdir"])
    assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
    if c.ours:
        assert p.stdout == "hello-from-task\n", repr(p.stdout)
    else:
        # REAL: the job never started: no logs, exit 0.
        assert p.stdout == "", repr(p.stdout)
    p = run_cli(c, t["home"], "logs", f"nope-{SUFFIX}", cwd=t["workdir"])
    assert p.returncode == 1, (p.returncode, p.stdout + p.stderr)
    assert f"Run nope-{SUFFIX} not found" in p.stdout + p.stderr, p.stdout + p.stderr


def git(cwd: str, *args: str, env: Optional[dict] = None) -> str:
    full = dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_SYSTEM=os.devnull, **(env or {}))
    p = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=full, capture_output=True, text=True
    )
    assert p.returncode == 0, f"git {args}: {p.stderr}"
    return p.stdout.strip()


@case("CLI: apply -d a task with `repos: [{local_path: .}]`; the job sees committed and local files")
def _(c: Ctx):
    """The upstream is served over HTTPS on loopback (tests/support/git_https_server.py):
    dstack's CLI takes only https:// and ssh:// remotes and checks access with git ls-remote.
    run.sh points the server's GIT_SSL_CAINFO (inherited by our shim and runners) at the
    certificate the helper writes to $API_COMPAT_GIT_STATE."""
    import hashlib

    from dstack._internal.utils.hash import slugify

    state = os.environ.get("API_COMPAT_GIT_STATE") or tempfile.mkdtemp(prefix="dstack-api-compat-git-")
    root = tempfile.mkdtemp(prefix="dstack-api-compat-git-root-")
    c.cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
    helper = Path(__file__).resolve().parent.parent / "support" / "git_https_server.py"
    server = subprocess.Popen(
        [sys.executable, str(helper), "--root", root, "--state", state],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    c.cleanup.append(lambda: (server.kill(), server.wait()))
    port = int(server.stdout.readline().split()[-1])
    env = {"GIT_SSL_CAINFO": str(Path(state) / "cert.pem")}
    url = f"https://127.0.0.1:{port}/up.git"

    git(root, "init", "-q", "--bare", "up.git")
    seed = Path(root) / "seed"
    seed.mkdir()
    (seed / "committed.txt").write_text("committed-content\n")
    (seed / "modified.txt").write_text("as-committed\n")
    git(str(seed), "init", "-q")
    git(str(seed), "add", ".")
    git(str(seed), "-c", "user.name=S", "-c", "user.email=s@e", "commit", "-qm", "seed")
    git(str(seed), "push", "-q", url, "main", env=env)
    git(root, "clone", "-q", url, "work", env=env)
    work = Path(root) / "work"
    head = git(str(work), "rev-parse", "HEAD")
    (work / "modified.txt").write_text("changed-locally\n")
    (work / "new.txt").write_text("untracked-file\n")
    name = new_run_name("repo")
    conf = {
        "type": "task",
        "name": name,
        "commands": ["cd $DSTACK_REPO_DIR && cat committed.txt modified.txt new.txt"],
        "repos": [{"local_path": ".", "path": "/workflow/src"}],
        "resources": SMALL_RESOURCES,
    }
    (work / ".dstack.yml").write_text(yaml.safe_dump(conf, sort_keys=False))
    home = cli_home(c)
    track_run(c, name)
    p = run_cli(c, home, "apply", "-d", "-y", "-f", ".dstack.yml", cwd=str(work), env_extra=env)
    assert p.returncode == 0 and f"Run {name} submitted, detaching..." in p.stdout, p.stdout + p.stderr

    run = c.client().runs.get(RUNS_PROJECT, name)
    spec = run.run_spec
    assert spec.repo_id == slugify("up", "127.0.0.1/up"), spec.repo_id
    assert spec.repo_dir == "/workflow/src", spec.repo_dir
    data = spec.repo_data
    got = (data.repo_type, data.repo_name, data.repo_branch, data.repo_hash)
    assert got == ("remote", "up", "main", head), got
    # The code blob: the diff of modified.txt and new.txt as a new file (sha256 of it).
    assert spec.repo_code_hash is not None and len(spec.repo_code_hash) == 64, spec.repo_code_hash
    diff = subprocess.run(["git", "diff", "--binary", head], cwd=work, capture_output=True).stdout
    for f in (".dstack.yml", "new.txt"):
        diff += subprocess.run(
            ["git", "diff", "--no-index", "--binary", "/dev/null", f], cwd=work, capture_output=True
        ).stdout
    assert spec.repo_code_hash == hashlib.sha256(diff).hexdigest(), spec.repo_code_hash
    head_with_creds = c.client().repos.get_with_creds(RUNS_PROJECT, spec.repo_id)
    assert head_with_creds.repo_creds.clone_url == url, head_with_creds

    wait_finished(c, name)
    p = run_cli(c, home, "logs", name, cwd=str(work))
    assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
    if c.ours:
        assert p.stdout == "committed-content\nchanged-locally\nuntracked-file\n", repr(p.stdout)
    else:
        # REAL: no fleets; the job never started.
        assert p.stdout == "", repr(p.stdout)


@case("CLI: stop -y on a `sleep 300` task")
def _(c: Ctx):
    from dstack._internal.core.models.runs import JobStatus, JobTerminationReason, RunTerminationReason

    name = new_run_name("sleep")
    home = cli_home(c)
    workdir = task_dir(c, name, ["sleep 300"])
    p = cli_apply(c, home, workdir, name)
    assert p.returncode == 0 and f"Run {name} submitted, detaching..." in p.stdout, p.stdout + p.stderr
    if c.ours:
        run, seen = wait_run(c, name, lambda r: r.status.value == "running" or r.status.is_finished(), "running")
        assert run.status.value == "running", seen
    else:
        # REAL: it fails with no fleets before it could be stopped; stop is then a no-op.
        wait_finished(c, name)
    p = run_cli(c, home, "stop", "-y", name, cwd=workdir)
    assert p.returncode == 0 and p.stdout == "Stopped\n", (p.returncode, p.stdout + p.stderr)
    run, seen = wait_finished(c, name)
    sub = run.latest_job_submission
    if c.ours:
        got = (run.status.value, run.status_message, run.termination_reason)
        assert got == ("terminated", "terminated", RunTerminationReason.STOPPED_BY_USER), (got, seen)
        got = (sub.status, sub.status_message, sub.termination_reason)
        assert got == (JobStatus.TERMINATED, "stopped", JobTerminationReason.TERMINATED_BY_USER), got
    else:
        got = (run.status.value, run.termination_reason, sub.status_message)
        assert got == ("failed", RunTerminationReason.JOB_FAILED, "no fleets"), got
    # The table shows it among all runs; stopping an unknown run fails.
    p = run_cli(c, home, "ps", "-a", cwd=workdir)
    rows = [" ".join(line.split()) for line in p.stdout.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1 and (" stopped " if c.ours else " no fleets ") in rows[0], p.stdout
    p = run_cli(c, home, "stop", "-y", f"nope-{SUFFIX}", cwd=workdir)
    assert p.returncode == 1 and f"Run nope-{SUFFIX} not found" in p.stdout + p.stderr, (
        p.returncode,
        p.stdout + p.stderr,
    )


@case("SDK: Client.runs.apply_configuration, refresh, logs, get, list")
def _(c: Ctx):
    from dstack.api import Client, Resources, Task

    name = new_run_name("sdk")
    client = Client.from_config(project_name=RUNS_PROJECT, server_url=c.url, user_token=c.token)
    track_run(c, name)
    run = client.runs.apply_configuration(
        configuration=Task(name=name, commands=["echo hello-from-sdk"], resources=Resources(**SMALL_RESOURCES)),
        repo=None,
    )
    assert run.name == name and run.status.value == "submitted", (run.name, run.status)
    seen = [run.status.value]
    deadline = time.monotonic() + RUN_WAIT_S
    while not run.status.is_finished():
        assert time.monotonic() < deadline, f"not finished after {RUN_WAIT_S} s: {seen}"
        time.sleep(0.5)
        run.refresh()
        if seen[-1] != run.status.value:
            seen.append(run.status.value)
    expect_finished(c, run._run)
    # Statuses only move forward.
    order = ["submitted", "pending", "provisioning", "running", "terminating", "done", "failed"]
    assert seen == sorted(seen, key=order.index), seen
    if c.ours:
        assert seen[-1] == "done" and "failed" not in seen, seen
        assert b"".join(run.logs()) == b"hello-from-sdk\n", list(run.logs())
    else:
        assert seen[-1] == "failed" and "running" not in seen, seen
        assert list(run.logs()) == [], list(run.logs())
    got = client.runs.get(name)
    assert got is not None and got.name == name and got.status == run.status, got
    assert client.runs.get(f"nope-{SUFFIX}") is None
    assert name in [r.name for r in client.runs.list(all=True)]


@case("CLI/SDK: fleet list (dstack: none; ours: the local fleet)")
def _(c: Ctx):
    home = cli_home(c)
    p = run_cli(c, home, "fleet", "list")
    assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
    lines = [line.split() for line in p.stdout.splitlines() if line.strip()]
    assert lines[0] == ["NAME", "NODES", "GPU", "SPOT", "BACKEND", "PRICE", "STATUS", "CREATED"], p.stdout
    fleets = c.client().fleets.list(RUNS_PROJECT, include_imported=True)
    if c.ours:
        assert [f.name for f in fleets] == ["local"], fleets
        fleet = fleets[0]
        assert fleet.status.value == "active" and fleet.project_name == RUNS_PROJECT, fleet
        assert [i.name for i in fleet.instances] == ["local-0"], fleet.instances
        assert fleet.instances[0].backend.value == "remote" and fleet.instances[0].hostname == "127.0.0.1"
        assert c.client().fleets.get(RUNS_PROJECT, "local").id == fleet.id
        # The fleet's row, then its instance's (an SSH-fleet-like host, idle: the run cases
        # before this one have finished).
        rows = [" ".join(row) for row in lines[1:]]
        assert len(rows) == 2, p.stdout
        assert rows[0].startswith("local 1 on-demand * active "), p.stdout
        assert rows[1].startswith("instance=0 - ssh (local) idle "), p.stdout
    else:
        assert fleets == [], fleets
        assert lines[1:] == [], p.stdout
    # REAL: the default message of a bare ResourceNotExistsError (routers/fleets.py get_fleet).
    e = raises(ResourceNotExistsError, c.client().fleets.get, RUNS_PROJECT, f"nope-{SUFFIX}")
    assert e.msg == "Resource not found", e.msg
    r = c.post(f"/api/project/{RUNS_PROJECT}/fleets/get", {"name": f"nope-{SUFFIX}"})
    expect_400(r, "Resource not found", "resource_not_exists")


@case("CLI: offer / offer --json / offer --group-by gpu --json")
def _(c: Ctx):
    home = cli_home(c)
    p = run_cli(c, home, "offer", "--json")
    assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
    doc = json.loads(p.stdout)
    assert set(doc) == {"project", "user", "requirements", "offers", "total_offers"}, sorted(doc)
    assert (doc["project"], doc["user"]) == (RUNS_PROJECT, "admin"), doc
    assert doc["requirements"]["resources"]["cpu"]["count"] == {"min": 1, "max": None}, doc["requirements"]
    p = run_cli(c, home, "offer")
    assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
    lines = [" ".join(line.split()) for line in p.stdout.splitlines()]
    assert "Project main" in lines and "Resources cpu=1.. mem=0GB.. gpu=0.." in lines, p.stdout
    no_offers = "No matching instance offers available."
    if c.ours:
        assert doc["total_offers"] >= 1 and len(doc["offers"]) == doc["total_offers"], doc
        offer = doc["offers"][0]
        assert (offer["backend"], offer["region"], offer["instance"]["name"], offer["price"]) == (
            "remote", "local", "local", 0.0,
        ), offer
        assert no_offers not in p.stdout, p.stdout
    else:
        assert (doc["offers"], doc["total_offers"]) == ([], 0), doc
        assert no_offers in " ".join(p.stdout.split()), p.stdout
    p = run_cli(c, home, "offer", "--group-by", "gpu", "--json")
    assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
    doc = json.loads(p.stdout)
    assert set(doc) == {"project", "requirements", "group_by", "gpus"}, sorted(doc)
    assert doc["group_by"] == ["gpu"] and doc["project"] == RUNS_PROJECT, doc
    host_gpus = 0
    if c.ours:
        fleet = c.client().fleets.get(RUNS_PROJECT, "local")
        host_gpus = len(fleet.instances[0].instance_type.resources.gpus)
    assert len(doc["gpus"]) == min(host_gpus, 1), doc["gpus"]


# ============================================================================================
# 7. Fleets: an SSH fleet through the CLI (its hosts never answer: they stay pending)
# ============================================================================================


@case("CLI: apply -f fleet.yml -y -d (SSH fleet), fleet list, fleet delete -i 1, fleet delete")
def _(c: Ctx):
    home = tempfile.mkdtemp(prefix="dstack-api-compat-home-")
    name = f"sshf-{SUFFIX}"
    # Hosts are unique across fleets of all projects: loopback addresses of our own.
    n = int(SUFFIX[:4], 16)
    hosts = [f"127.{n % 250 + 1}.{n // 250 % 250}.{i}" for i in (11, 12)]
    api = c.client()
    try:
        p = run_cli(c, home, "project", "add", "--name", "main", "--url", c.url, "--token", c.token, "-y")
        assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
        key = Path(home) / "fleet_key"
        subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", str(key)], check=True)
        (Path(home) / "fleet.yml").write_text(
            f"type: fleet\nname: {name}\nssh_config:\n  user: ubuntu\n  identity_file: {key}\n"
            f"  hosts:\n    - {hosts[0]}\n    - hostname: {hosts[1]}\n      port: 2222\n"
        )
        p = run_cli(c, home, "apply", "-f", "fleet.yml", "-y", "-d")
        assert p.returncode == 0, (p.stdout + p.stderr)[-1500:]
        assert "Fleet configuration submitted" in p.stdout, p.stdout[-800:]
        fleet = api.fleets.get("main", name)
        assert fleet.status.value == "active", fleet.status
        got = [(i.instance_num, i.hostname, i.status.value, i.backend.value) for i in fleet.instances]
        assert got == [(0, hosts[0], "pending", "remote"), (1, hosts[1], "pending", "remote")], got
        ssh = fleet.spec.configuration.ssh_config
        assert ssh.ssh_key is None and ssh.identity_file == str(key), ssh
        assert fleet.instances[0].total_blocks == 1 and fleet.instances[0].price == 0.0, fleet.instances[0]
        raw = c.post("/api/project/main/fleets/get", body={"name": name}).text
        assert "PRIVATE KEY" not in raw, raw[:300]

        p = run_cli(c, home, "fleet", "list")
        assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
        rows = [" ".join(line.split()) for line in p.stdout.splitlines()]
        assert any(r.startswith(name) for r in rows), p.stdout
        assert sum("pending" in r for r in rows) >= 2, p.stdout

        # Applying the same file again: no changes, nothing to do.
        p = run_cli(c, home, "apply", "-f", "fleet.yml", "-y", "-d")
        assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
        assert "No configuration changes detected" in " ".join(p.stdout.split()), p.stdout[-800:]

        p = run_cli(c, home, "fleet", "delete", name, "-i", "1", "-y")
        assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
        fleet = api.fleets.get("main", name)
        assert fleet.status.value == "active", fleet.status
        left = {i.instance_num: i.status.value for i in fleet.instances}
        assert left.get(0) == "pending" and left.get(1, "terminating") == "terminating", left

        p = run_cli(c, home, "fleet", "delete", name, "-y")
        assert p.returncode == 0, (p.stdout + p.stderr)[-800:]
        deadline = time.time() + 90
        while True:
            r = c.post("/api/project/main/fleets/get", body={"name": name})
            if r.status_code == 400:
                expect_400(r, "Resource not found", "resource_not_exists")
                break
            assert r.json()["status"] == "terminating", r.json()["status"]
            assert time.time() < deadline, "the fleet was not deleted in 90 s"
            time.sleep(1)
    finally:
        try:
            api.fleets.delete("main", [name])
        except Exception:
            pass
        shutil.rmtree(home, ignore_errors=True)


# ============================================================================================


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True, help="the admin token")
    ap.add_argument("-k", dest="filter", help="run only cases whose name contains this")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument(
        "--server-kind",
        choices=["dstack", "rust"],
        default=os.environ.get("API_COMPAT_SERVER_KIND") or None,
        help="which server --url is: the run cases expect no fleets (dstack) or the local fleet (rust)",
    )
    args = ap.parse_args()

    # The SDK must not read a developer's ~/.dstack or DSTACK_* settings.
    for k in [k for k in os.environ if k.startswith("DSTACK_")]:
        del os.environ[k]

    ctx = Ctx(args.url, args.token, args.verbose, args.server_kind)
    passed = failed = 0
    for name, fn in CASES:
        if args.filter and args.filter not in name:
            continue
        try:
            fn(ctx)
        except Exception as e:  # noqa: BLE001
            failed += 1
            reason = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
            print(f"FAIL {name}: {' '.join(reason.split())[:1000]}")
            if args.verbose:
                traceback.print_exc()
        else:
            passed += 1
            print(f"PASS {name}")
        finally:
            sys.stdout.flush()
    for undo in reversed(ctx.cleanup):
        try:
            undo()
        except Exception:  # noqa: BLE001
            pass
    print(f"api-compat: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
