"""The operations console (运营后台): a web console for the people who run the money.

An entrypoint like gateway/api: server-rendered pages (Jinja2, autoescaped) on their own HTTP
port (``[console]``; HTTPS with ``[console.tls]``), behind operator sign-in, calling the same use
cases and audit log as the admin API (gateway/operations.py) and reading through the store's read model
(gateway/store/console_queries.py); it holds no SQL. docs/CONSOLE.md describes every screen.

* ``config``: the ``[console]`` table
* ``server``: the application, its middlewares (headers, errors, session, role, CSRF), rendering
* ``signin``: sign-in and sign-out; ``sessions``: signed session cookies and CSRF tokens;
  ``passwords``: scrypt hashes; ``operators``: who may sign in, in which role; ``access``: roles per route
* ``pages``: the read screens; ``actions``: the changes; ``views``: what pages show, without I/O
* ``screens``: the navigation and the screens added to the core ones (one line each); ``plans``: the
  withholding plans screen (``plans_words``: its words)
* ``i18n``: every word in Chinese and English; ``templates/``, ``static/`` (libraries from npm in
  ``static/vendor``, installed by ``make assets``)
"""
