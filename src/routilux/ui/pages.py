"""The HTML shells of the web UI's pages and the fixed set of static files.

Each page is a small server-rendered shell -- the elements the script fills, with the
ids the browser tests rely on -- and one script, ``/static/app.js``, which reads the
JSON API, listens to the live streams and writes every piece of job data into the
page with ``textContent`` (job data is untrusted). No inline script or handler, no CDN.

Static files are served only from :data:`STATIC_FILES`, a fixed name -> file table:
nothing from the request reaches the filesystem. Mermaid's script
(``vendor/mermaid.min.js``) is put there by the wheel's build; without it the pages
show each diagram's Mermaid source instead, with a note.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Optional

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: URL name -> (file under static/, content type).
STATIC_FILES: dict[str, tuple[str, str]] = {
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
    "vendor/mermaid.min.js": ("vendor/mermaid.min.js", "text/javascript; charset=utf-8"),
}

MERMAID = "vendor/mermaid.min.js"


def static_path(name: str) -> Optional[Path]:
    """The file of static name ``name`` if it is one of the fixed set and exists."""
    entry = STATIC_FILES.get(name)
    if entry is None:
        return None
    path = STATIC_DIR / entry[0]
    return path if path.is_file() else None


def has_mermaid() -> bool:
    return static_path(MERMAID) is not None


def _shell(title: str, page: str, body: str, **data: str) -> str:
    attrs = "".join(
        f' data-{key.replace("_", "-")}="{escape(value)}"' for key, value in data.items()
    )
    mermaid = f'<script src="/static/{MERMAID}" defer></script>\n' if has_mermaid() else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} - Routilux</title>
<link rel="stylesheet" href="/static/style.css">
{mermaid}<script src="/static/app.js" defer></script>
</head>
<body data-page="{page}" data-mermaid="{"1" if has_mermaid() else "0"}"{attrs}>
<header>
<a class="brand" href="/">Routilux</a>
<nav><a href="/">Jobs</a> <a href="/flows">Flows</a></nav>
<span id="live" class="live" title="live updates">connecting</span>
</header>
<main>
{body}
</main>
</body>
</html>
"""


_STATUS_OPTIONS = "".join(
    f'<option value="{status}">{status}</option>'
    for status in ("pending", "running", "paused", "waiting", "completed", "failed", "cancelled")
)


def jobs_page() -> str:
    body = f"""<h1>Jobs</h1>
<form id="filters" class="filters">
<label>Flow <input id="filter-flow" name="flow_id" list="flow-ids" autocomplete="off"></label>
<datalist id="flow-ids"></datalist>
<label>Status <select id="filter-status" name="status">
<option value="">any</option>{_STATUS_OPTIONS}</select></label>
<label>Created <select id="filter-since" name="since">
<option value="">any time</option><option value="3600">last hour</option>
<option value="86400">last day</option><option value="604800">last week</option>
</select></label>
</form>
<table id="jobs">
<thead><tr><th>Job</th><th>Flow</th><th>Status</th><th>Created</th><th>Updated</th></tr></thead>
<tbody></tbody>
</table>
<p id="jobs-empty" class="note" hidden>No jobs.</p>"""
    return _shell("Jobs", "jobs", body)


def job_page(job_id: str) -> str:
    body = """<h1>Job <code id="job-id"></code></h1>
<p>Flow <a id="job-flow"></a> &middot; status <strong id="job-status" class="status"></strong>
<span id="job-message" class="note"></span></p>
<p class="buttons">
<button id="pause" type="button">Pause</button>
<button id="resume" type="button">Resume</button>
<button id="cancel" type="button">Cancel</button>
</p>
<section id="inputs-section"><h2>Waiting for input</h2><div id="inputs"></div></section>
<section><h2>Graph</h2><div id="diagram" class="diagram"></div></section>
<section><h2>Routines</h2>
<table id="routines"><thead>
<tr><th>Routine</th><th>Class</th><th>Deliveries</th><th>State</th></tr></thead>
<tbody></tbody></table></section>
<section><h2>Timeline</h2><ol id="timeline" class="timeline"></ol></section>
<section><h2>Outputs</h2><div id="outputs"></div></section>
<section><h2>Errors</h2><div id="errors"></div></section>
<section><h2>Shared data</h2><pre id="shared-data"></pre></section>
<section><h2>Shared log</h2><pre id="shared-log"></pre></section>"""
    return _shell(f"Job {job_id}", "job", body, job_id=job_id)


def flows_page(flow_id: Optional[str] = None) -> str:
    title = "Flows" if flow_id is None else f"Flow {flow_id}"
    body = f"""<h1>{escape(title)}</h1>
<div id="flows"></div>
<section><h2>Start a job</h2>
<form id="start-job">
<label>Flow <select name="flow"></select></label>
<label>Entry <select name="entry"></select></label>
<label>Parameters (JSON) <textarea name="params" rows="4">{{}}</textarea></label>
<p id="entry-params" class="note"></p>
<button type="submit">Start</button>
<p id="start-error" class="error" role="alert"></p>
</form></section>"""
    extra = {} if flow_id is None else {"flow_id": flow_id}
    return _shell(title, "flows", body, **extra)
