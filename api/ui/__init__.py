"""The admin web UI: server-rendered pages under /ui, polled JSON under /ui/api, a session cookie."""
