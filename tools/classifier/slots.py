# ruff: noqa: E501  (data: pasted code and logs keep their own line lengths)
"""Slot fillers shared by the corpus templates (see make_corpus.py).

Components deliberately carry words that belong to other task types ("the deploy script", "the
email-validation helper", "the triage bot", "the security headers middleware"): a request's type is
what is asked, not what it is about, so every type's templates draw from the same pool.
"""

LANGS = ["Python", "Go", "TypeScript", "JavaScript", "Java", "Rust", "Ruby", "C#", "Kotlin", "Swift", "PHP",
         "Elixir", "Scala", "C++", "C", "Dart", "Clojure", "OCaml", "Lua", "Perl", "bash", "SQL", "F#", "Zig"]

FRAMEWORKS = ["Django", "FastAPI", "Flask", "Rails", "Spring Boot", "Express", "NestJS", "Next.js", "React", "Vue",
              "Angular", "Svelte", "Laravel", "Phoenix", "gin", "Actix", "Axum", "ASP.NET Core", "Ktor", "SwiftUI",
              "Flutter", "Celery", "Sidekiq", "Kafka Streams", "Airflow", "dbt", "Terraform", "Helm", "Ansible"]

TEST_TOOLS = ["pytest", "unittest", "jest", "vitest", "mocha", "JUnit", "TestNG", "rspec", "minitest", "go test",
              "testify", "xUnit", "NUnit", "XCTest", "ExUnit", "cargo test", "proptest", "hypothesis", "Playwright",
              "Cypress", "Selenium", "k6", "Locust", "PHPUnit", "Kotest", "ScalaTest"]

COMPONENTS = [
    "the billing service", "the auth middleware", "the checkout flow", "the search indexer", "the notifications worker",
    "the CSV importer", "the session store", "the rate limiter", "the payment webhook handler", "the upload endpoint",
    "the user profile page", "the report generator", "the nightly sync job", "the feature-flag client",
    "the email-validation helper", "the --dry-run mode", "the health probe", "the deploy script", "the migration runner",
    "the security headers middleware", "the ticket router", "the docs builder", "the test harness", "the review bot",
    "the triage bot", "the release pipeline", "the login form", "the password reset flow", "the invoice PDF renderer",
    "the GraphQL resolver for orders", "the websocket gateway", "the image resizer", "the cache layer",
    "the retry decorator", "the config loader", "the CLI argument parser", "the pagination helper", "the audit log",
    "the metrics exporter", "the admin dashboard", "the mobile onboarding screens", "the search autocomplete",
    "the ETL job", "the permissions check", "the tenant isolation layer", "the event bus consumer", "the job scheduler",
    "the OAuth callback", "the API client SDK", "the backup script", "the cron wrapper", "the i18n loader",
    "the date-parsing util", "the currency conversion module", "the inventory reservation code", "the chat service",
    "the recommendation model server", "the shopping cart reducer", "the logging setup", "the kubernetes operator",
    "the vulnerability scanner wrapper", "the changelog generator", "the bug report form", "the email sender",
    "the deployment manifest", "the secrets loader", "the load balancer config", "the geo lookup service",
    "the order state machine", "the file watcher", "the markdown parser", "the SQL query builder",
    "the connection pool", "the websocket reconnect logic", "the payment retry queue", "the signup API",
]

FUNCS = ["parse_date", "calculateTax", "normalize_email", "retry_with_backoff", "mergeSorted", "slugify",
         "apply_discount", "validate_iban", "split_name", "to_snake_case", "fetchUserById", "render_invoice",
         "dedupe_events", "compute_checksum", "parseHeaders", "is_business_day", "roundToCents", "flatten",
         "group_by_day", "encodeCursor", "decode_token", "hash_password", "throttle", "topK", "bisect_left",
         "sanitize_filename", "load_config", "resolve_alias", "format_duration", "chunk_list", "diff_schemas",
         "build_query", "reserve_stock", "expire_sessions", "send_digest", "mask_card_number", "percentile"]

FILES = ["api/orders.py", "src/billing/invoice.ts", "internal/auth/jwt.go", "app/models/user.rb", "lib/cache.rs",
         "services/payments/Webhook.java", "web/src/hooks/useCart.ts", "cmd/sync/main.go", "deploy/values.yaml",
         "migrations/0042_add_index.sql", "charts/api/templates/deployment.yaml", "infra/main.tf",
         "src/main/kotlin/Checkout.kt", "Sources/App/Router.swift", "src/Controller/UserController.php",
         "lib/ledger/posting.ex", "docker-compose.yml", ".github/workflows/ci.yml", "utils/dates.py", "README.md"]

SYMPTOMS = [
    "returns 500 on every second request", "times out after exactly 30 seconds", "crashes on startup",
    "leaks memory until the pod is OOMKilled", "hangs when the queue is empty", "double-charges some customers",
    "returns stale data after an update", "is slow only on Mondays", "throws a NullPointerException in prod only",
    "drops messages under load", "logs people out at random", "writes the wrong timezone",
    "fails only on the CI runner", "deadlocks during the nightly batch", "returns an empty list for some users",
    "spikes CPU to 100%", "rounds totals wrong by a cent", "loses the last row of the file",
    "shows another user's name for a moment", "fails with 'connection refused' after a deploy",
    "gives a 403 even for admins", "sends the same email twice", "is flaky, passes on rerun",
    "corrupts unicode characters", "segfaults on arm64 only", "retries forever", "ignores the config flag",
    "never finishes the migration", "gets slower every hour", "returns 429 even at low traffic",
]

CODE = [
    "def total(items):\n    t = 0\n    for i in items:\n        t += i['price'] * i['qty']\n    return t",
    "func (c *Client) Get(ctx context.Context, id string) (*User, error) {\n\tresp, err := c.http.Get(c.base + \"/users/\" + id)\n\tif err != nil {\n\t\treturn nil, err\n\t}\n\tdefer resp.Body.Close()\n\tvar u User\n\treturn &u, json.NewDecoder(resp.Body).Decode(&u)\n}",
    "export async function loadCart(userId: string) {\n  const res = await fetch(`/api/cart/${userId}`);\n  return res.json();\n}",
    "public List<Order> recent(int days) {\n    return repo.findAll().stream()\n        .filter(o -> o.getCreated().isAfter(now().minusDays(days)))\n        .collect(toList());\n}",
    "fn parse(line: &str) -> Result<Entry, Error> {\n    let mut parts = line.splitn(3, ' ');\n    let ts = parts.next().ok_or(Error::Missing)?;\n    todo!()\n}",
    "class UsersController < ApplicationController\n  def show\n    @user = User.find(params[:id])\n    render json: @user\n  end\nend",
    "SELECT u.id, count(o.id)\nFROM users u LEFT JOIN orders o ON o.user_id = u.id\nWHERE o.created_at > now() - interval '30 days'\nGROUP BY u.id;",
    "const handler = async (req, res) => {\n  const { email } = req.body;\n  if (!/^[^@]+@[^@]+$/.test(email)) return res.status(400).end();\n  await db.insert({ email });\n  res.status(201).end();\n};",
    "@app.post('/upload')\nasync def upload(file: UploadFile):\n    path = f'/data/{file.filename}'\n    with open(path, 'wb') as f:\n        f.write(await file.read())\n    return {'path': path}",
    "apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n        - name: api\n          image: registry.local/api:2.3.1",
    "def handle(event):\n    if event.type == 'created':\n        create(event)\n    elif event.type == 'updated':\n        update(event)\n    # deleted?",
    "resource \"aws_s3_bucket\" \"reports\" {\n  bucket = \"acme-reports\"\n  acl    = \"private\"\n}",
    "suspend fun refresh(): List<Item> = withContext(Dispatchers.IO) {\n    api.items().map { it.toDomain() }\n}",
    "def retry(fn, times=3):\n    for i in range(times):\n        try:\n            return fn()\n        except Exception:\n            time.sleep(2 ** i)",
]

LOGS = [
    "Traceback (most recent call last):\n  File \"app/worker.py\", line 88, in run\n    job = queue.get(timeout=5)\n  File \"/usr/lib/python3.12/queue.py\", line 179, in get\n    raise Empty\n_queue.Empty",
    "2026-03-14T02:11:07Z ERROR payments: webhook signature mismatch id=evt_1Pq9 retry=3\n2026-03-14T02:11:09Z WARN payments: giving up on evt_1Pq9",
    "panic: runtime error: index out of range [3] with length 3\n\ngoroutine 41 [running]:\nmain.(*Batcher).flush(0xc0001a2000)\n\t/src/batch.go:77 +0x1d4",
    "java.lang.NullPointerException: Cannot invoke \"String.length()\" because \"name\" is null\n\tat com.acme.users.NameFormatter.format(NameFormatter.java:23)\n\tat com.acme.users.UserService.display(UserService.java:104)",
    "10.0.3.7 - - [02/Apr/2026:10:01:44 +0000] \"POST /api/v2/orders HTTP/1.1\" 502 157 \"-\" \"okhttp/4.12\" 30.001",
    "Warning  BackOff  3m (x41 over 12m)  kubelet  Back-off restarting failed container api in pod api-7d9f-xk2lp",
    "ERROR: deadlock detected\nDETAIL: Process 8812 waits for ShareLock on transaction 99120; blocked by process 8790.",
    "TypeError: Cannot read properties of null (reading 'id')\n    at CartSummary (CartSummary.jsx:31:22)",
    "npm ERR! code ERESOLVE\nnpm ERR! ERESOLVE unable to resolve dependency tree\nnpm ERR! peer react@\"^17\" from some-lib@2.1.0",
    "[sidekiq] ERROR: Job raised exception class=InvoiceJob jid=9f2 error_class=Redis::TimeoutError",
]

CONTEXTS = [
    "Context: we're a team of five running a B2B SaaS on Postgres and Kubernetes; most of the code is {lang}.",
    "Some background — this is a legacy codebase, about eight years old, half migrated to {framework}.",
    "For context, the service handles about 2k requests per second at peak and we're on call this week.",
    "We use {framework} with {lang}, GitHub Actions for CI, and deploy to AWS with ArgoCD.",
    "This came up in standup today and nobody had a clear answer.",
    "Background: I joined the team last month and I'm still learning the codebase, so sorry if this is basic.",
    "The repo is a monorepo with the web app, the API and a couple of workers; shared libs live in /packages.",
    "We had an incident last quarter around this area, so people are nervous about touching it.",
    "Our style guide says small functions, explicit types, and no clever one-liners.",
    "Here is the relevant part of our setup, the rest is standard.",
]

TEAMS = ["payments", "platform", "mobile", "frontend", "search", "infra", "data", "growth", "identity", "billing",
         "support tooling", "SRE", "security", "core API"]

PEOPLE = ["my manager", "the CTO", "the whole engineering team", "a customer", "our biggest customer", "the vendor",
          "a candidate", "the product team", "legal", "finance", "the support team", "an open-source maintainer",
          "the on-call channel", "our investors", "a new hire", "the design team", "the QA team", "a partner company"]
