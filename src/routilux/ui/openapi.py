"""The OpenAPI 3.1 description of the web UI's JSON API (``GET /api/openapi.json``).

Written by hand beside the routes (``routilux.ui.app``); a test checks that every
``/api/`` route of the app is described here and every path described is a route (the
pages and static files are not part of the API).
"""

from __future__ import annotations

from typing import Any

_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_FLOW_ID = {"name": "flow_id", "in": "path", "required": True, "schema": {"type": "string"}}
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The id of the last event received: the stream resumes after it.",
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_SSE = {
    "description": "A stream of Server-Sent Events (text/event-stream)",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def _control(action: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"{action.capitalize()} the job",
            "parameters": [_JOB_ID],
            "responses": {
                "200": _json(f"{action} done in this process", "ActionResult"),
                "202": _json(
                    "asked of the process that runs the job (control request)", "ActionResult"
                ),
                "403": _error("cross-origin request"),
                "404": _error("unknown job"),
                "409": _error(f"the job cannot be {action}d in its state"),
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    """The document (a new dict each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Routilux web UI",
            "version": "1",
            "description": (
                "Watch, inspect and answer jobs of a Routilux job store. With a token, "
                "every request needs 'Authorization: Bearer <token>'; a request that "
                "changes something needs an Origin header matching the host."
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
                    "required": ["error"],
                },
                "JobSummary": {
                    "type": "object",
                    "properties": {
                        "job_id": {"type": "string"},
                        "flow_id": {"type": "string"},
                        "status": {"type": "string"},
                        "owner": {"type": ["string", "null"]},
                        "created_at": {"type": "number"},
                        "updated_at": {"type": "number"},
                        "waiting": {"type": "integer"},
                    },
                },
                "JobList": {
                    "type": "object",
                    "properties": {
                        "jobs": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/JobSummary"},
                        },
                        "limit": {"type": "integer"},
                        "offset": {"type": "integer"},
                    },
                },
                "Job": {
                    "type": "object",
                    "description": (
                        "A job summary plus commit_seq, waiting_for (requests with their "
                        "schemas), timeline, routines (deliveries, state), shared_data, "
                        "shared_log, outputs, errors (with tracebacks) and mermaid."
                    ),
                },
                "Flow": {
                    "type": "object",
                    "properties": {
                        "flow_id": {"type": "string"},
                        "routines": {"type": "array", "items": {"type": "string"}},
                        "entries": {"type": "array", "items": {"type": "string"}},
                        "mermaid": {"type": "string"},
                        "entry_params": {"type": "object"},
                    },
                },
                "ActionResult": {
                    "type": "object",
                    "properties": {
                        "job_id": {"type": "string"},
                        "status": {"type": "string"},
                        "requested": {"type": "string"},
                    },
                },
                "Input": {
                    "type": "object",
                    "properties": {
                        "routine_id": {"type": "string"},
                        "slot": {"type": "string"},
                        "data": {"type": "object"},
                    },
                    "required": ["routine_id", "slot", "data"],
                },
                "StartJob": {
                    "type": "object",
                    "properties": {"entry": {"type": "string"}, "params": {"type": "object"}},
                    "required": ["entry"],
                },
            },
        },
        "paths": {
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "the OpenAPI document"}},
                }
            },
            "/api/jobs": {
                "get": {
                    "summary": "The stored jobs, newest first",
                    "parameters": [
                        {"name": "flow_id", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "a status, or several separated by commas",
                        },
                        {
                            "name": "since",
                            "in": "query",
                            "schema": {"type": "number"},
                            "description": "created at or after (Unix seconds)",
                        },
                        {
                            "name": "until",
                            "in": "query",
                            "schema": {"type": "number"},
                            "description": "created before (Unix seconds)",
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {"name": "offset", "in": "query", "schema": {"type": "integer"}},
                    ],
                    "responses": {
                        "200": _json("the jobs", "JobList"),
                        "400": _error("a bad query parameter (named)"),
                    },
                }
            },
            "/api/jobs/{job_id}": {
                "get": {
                    "summary": "One job: its summary and full state",
                    "parameters": [_JOB_ID],
                    "responses": {"200": _json("the job", "Job"), "404": _error("unknown job")},
                }
            },
            "/api/jobs/{job_id}/pause": _control("pause"),
            "/api/jobs/{job_id}/resume": _control("resume"),
            "/api/jobs/{job_id}/cancel": _control("cancel"),
            "/api/jobs/{job_id}/input": {
                "post": {
                    "summary": "Answer an open request for input (resumes a waiting job)",
                    "parameters": [_JOB_ID],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Input"}}
                        },
                    },
                    "responses": {
                        "200": _json("input delivered", "ActionResult"),
                        "400": _error("malformed body"),
                        "404": _error("unknown job"),
                        "409": _error("the job takes no input"),
                        "413": _error("body too large"),
                        "422": _error("input not valid for the request's schema (names the field)"),
                    },
                }
            },
            "/api/jobs/{job_id}/events": {
                "get": {
                    "summary": "Live events of one job (SSE): reset, change, status",
                    "parameters": [_JOB_ID, _LAST_EVENT_ID],
                    "responses": {"200": _SSE, "404": _error("unknown job")},
                }
            },
            "/api/events": {
                "get": {
                    "summary": "Live events of the jobs list (SSE): reset, created, status",
                    "parameters": [_LAST_EVENT_ID],
                    "responses": {"200": _SSE},
                }
            },
            "/api/flows": {
                "get": {
                    "summary": "The registered flows",
                    "responses": {"200": {"description": "{flows: [Flow]}"}},
                }
            },
            "/api/flows/{flow_id}": {
                "get": {
                    "summary": "One registered flow: diagram, entries, their parameters",
                    "parameters": [_FLOW_ID],
                    "responses": {"200": _json("the flow", "Flow"), "404": _error("unknown flow")},
                }
            },
            "/api/flows/{flow_id}/jobs": {
                "post": {
                    "summary": "Start a job of the flow (journaled in the store)",
                    "parameters": [_FLOW_ID],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/StartJob"}
                            }
                        },
                    },
                    "responses": {
                        "201": _json("the job started", "ActionResult"),
                        "400": _error("malformed body"),
                        "404": _error("unknown flow"),
                        "413": _error("body too large"),
                        "422": _error("bad entry or parameters"),
                    },
                }
            },
        },
        "security": [{"bearer": []}, {}],
    }
