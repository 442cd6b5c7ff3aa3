# CPU per refused resume (CURSOR_EXPIRED) on one binary: python3 bench/tools/refusal.py BIN [EVENTS] [TRIES]
# Starts BIN on a fresh SQLite file (pinned to core 0), makes EVENTS stock changes of one product,
# then resumes TRIES times over SSE with Last-Event-ID at position 1 (EVENTS behind, past
# RESUME_MAX_EVENTS = 10,000 by default) and reports the server's CPU per refusal (/proc).
import base64, hashlib, hmac, http.client, json, os, re, sqlite3, subprocess, sys, tempfile, time, urllib.parse

binary = sys.argv[1]
events = int(sys.argv[2]) if len(sys.argv) > 2 else 12000
tries = int(sys.argv[3]) if len(sys.argv) > 3 else 200


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def token(sub, role):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": sub, "role": role, "exp": int(time.time()) + 3600}).encode())
    signature = b64(hmac.new(b"bench", head + b"." + claims, hashlib.sha256).digest())
    return (head + b"." + claims + b"." + signature).decode()


db = tempfile.mkdtemp()
env = dict(os.environ, BIND_ADDR="127.0.0.1:0", DATABASE_URL=f"sqlite://{db}/s.db", JWT_SECRET="bench",
           RUST_LOG="info", SQLITE_SYNCHRONOUS="normal")
server = subprocess.Popen(["taskset", "-c", "0", binary], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
for line in server.stdout:
    found = re.search(r"listening on (\S+)", line)
    if found:
        host, port = found.group(1).rsplit(":", 1)
        break
staff = token("staff-1", "staff")
conn = http.client.HTTPConnection(host, int(port))


def gql(query, variables):
    headers = {"content-type": "application/json", "authorization": f"Bearer {staff}"}
    conn.request("POST", "/graphql", json.dumps({"query": query, "variables": variables}), headers)
    return json.loads(conn.getresponse().read())


product = gql('mutation { createProduct(input: {sku: "X", name: "X", price: "1.00"}) { id } }', {})
product = product["data"]["createProduct"]["id"]
for quantity in range(events):
    gql("mutation($p: ID!, $q: Int!) { setInventory(productId: $p, quantity: $q) { id } }",
        {"p": product, "q": quantity})
epoch = sqlite3.connect(f"{db}/s.db").execute("SELECT epoch FROM log_state").fetchone()[0]
query = urllib.parse.quote(f'subscription {{ inventoryChanged(productId: "{product}") {{ newQuantity }} }}')


def resume(last_event_id):
    """One SSE resume; the text up to its first event."""
    stream = http.client.HTTPConnection(host, int(port))
    stream.request("GET", f"/graphql/stream?query={query}",
                   headers={"accept": "text/event-stream", "last-event-id": last_event_id})
    response, data = stream.getresponse(), b""
    while b"data:" not in data:
        chunk = response.read1(4096)
        if not chunk:
            break
        data += chunk
    stream.close()
    return data.decode(errors="replace")


def cpu():
    fields = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


old = f"{epoch}.1"
assert "CURSOR_EXPIRED" in resume(old)
before, started = cpu(), time.time()
for _ in range(tries):
    resume(old)
after, ended = cpu(), time.time()
print(f"{os.path.basename(binary)}: {tries} refusals of a cursor {events} events behind: "
      f"{(after - before) / tries * 1e3:.2f} ms of server CPU each, {(ended - started) / tries * 1e3:.2f} ms wall each")
server.terminate()
server.wait()
