/*
 * waf-e2e stand-in WAF filter: a proxy-wasm (ABI v0.2.1) HTTP filter for Envoy that does what
 * coraza-proxy-wasm does at its edges and nothing else. For each request it asks the harness's
 * reference WAF service (ModSecurity + OWASP CRS) for a decision per stage through proxy_http_call
 * (protocol: src/waf/protocol.rs), then increments the counters the service names, logs the audit
 * record as "AuditLog:<json>", and answers with the block status or lets the stream continue.
 *
 * Freestanding: no libc; a size-class allocator over wasm linear memory. It never parses JSON.
 * Built by src/filter/standin.rs with clang --target=wasm32 (see src/filter/build.rs).
 */

typedef unsigned char u8;
typedef unsigned int u32;
typedef int i32;
typedef long long i64;
typedef unsigned long size_t;

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(name) __attribute__((import_module("env"), import_name(name)))

/* ---- host functions (proxy-wasm ABI v0.2.1) ---- */
IMPORT("proxy_log") u32 proxy_log(u32 level, const u8 *msg, size_t size);
IMPORT("proxy_get_buffer_bytes") u32 proxy_get_buffer_bytes(u32 type, size_t start, size_t max, u8 **data, size_t *size);
IMPORT("proxy_get_header_map_pairs") u32 proxy_get_header_map_pairs(u32 type, u8 **data, size_t *size);
IMPORT("proxy_get_header_map_value") u32 proxy_get_header_map_value(u32 type, const u8 *key, size_t key_size, u8 **data, size_t *size);
IMPORT("proxy_get_property") u32 proxy_get_property(const u8 *path, size_t path_size, u8 **data, size_t *size);
IMPORT("proxy_http_call") u32 proxy_http_call(const u8 *upstream, size_t upstream_size, const u8 *headers, size_t headers_size,
                                              const u8 *body, size_t body_size, const u8 *trailers, size_t trailers_size,
                                              u32 timeout_ms, u32 *call_id);
IMPORT("proxy_set_effective_context") u32 proxy_set_effective_context(u32 context_id);
IMPORT("proxy_continue_stream") u32 proxy_continue_stream(u32 stream_type);
IMPORT("proxy_send_local_response") u32 proxy_send_local_response(u32 status, const u8 *details, size_t details_size,
                                                                  const u8 *body, size_t body_size, const u8 *headers,
                                                                  size_t headers_size, i32 grpc_status);
IMPORT("proxy_define_metric") u32 proxy_define_metric(u32 type, const u8 *name, size_t name_size, u32 *metric_id);
IMPORT("proxy_increment_metric") u32 proxy_increment_metric(u32 metric_id, i64 delta);

enum { LOG_DEBUG = 1, LOG_INFO = 2, LOG_WARN = 3, LOG_ERROR = 4 };
enum { BUF_REQUEST_BODY = 0, BUF_RESPONSE_BODY = 1, BUF_CALL_RESPONSE_BODY = 4, BUF_PLUGIN_CONFIGURATION = 7 };
enum { MAP_REQUEST_HEADERS = 0, MAP_RESPONSE_HEADERS = 2, MAP_CALL_RESPONSE_HEADERS = 6 };
enum { STREAM_REQUEST = 0, STREAM_RESPONSE = 1 };
enum { ACTION_CONTINUE = 0, ACTION_PAUSE = 1 }; /* PAUSE on a body callback = StopIterationAndBuffer */
enum { METRIC_COUNTER = 0 };
enum { STATUS_OK = 0 };

/* ---- memory: power-of-two size classes with free lists, grown from __heap_base ---- */
extern u8 __heap_base;
static u8 *heap_top;
static u8 *heap_end;
static void *free_lists[32];

void *memcpy(void *dst, const void *src, size_t n) {
  u8 *d = dst;
  const u8 *s = src;
  while (n--) *d++ = *s++;
  return dst;
}

void *memset(void *dst, int c, size_t n) {
  u8 *d = dst;
  while (n--) *d++ = (u8)c;
  return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
  const u8 *x = a, *y = b;
  for (size_t i = 0; i < n; i++)
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  return 0;
}

static u32 size_class(size_t n) {
  u32 c = 4; /* 16 bytes, header included */
  while (((size_t)1 << c) < n + 8) c++;
  return c;
}

static void *grow(size_t bytes) {
  if (!heap_top) {
    heap_top = (u8 *)(((size_t)&__heap_base + 15) & ~(size_t)15);
    heap_end = (u8 *)(__builtin_wasm_memory_size(0) * 65536);
  }
  while ((size_t)(heap_end - heap_top) < bytes) {
    size_t pages = (bytes - (size_t)(heap_end - heap_top) + 65535) / 65536;
    if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return 0;
    heap_end += pages * 65536;
  }
  u8 *p = heap_top;
  heap_top += bytes;
  return p;
}

EXPORT("malloc") void *malloc(size_t n) {
  if (n > ((size_t)1 << 30)) return 0;
  u32 c = size_class(n);
  u8 *block = free_lists[c];
  if (block) {
    free_lists[c] = *(void **)(block + 8);
  } else {
    block = grow((size_t)1 << c);
    if (!block) return 0;
  }
  *(u32 *)block = c;
  return block + 8;
}

EXPORT("free") void free(void *p) {
  if (!p) return;
  u8 *block = (u8 *)p - 8;
  u32 c = *(u32 *)block;
  *(void **)(block + 8) = free_lists[c];
  free_lists[c] = block;
}

EXPORT("proxy_on_memory_allocate") void *proxy_on_memory_allocate(size_t n) { return malloc(n); }

EXPORT("proxy_abi_version_0_2_1") void proxy_abi_version_0_2_1(void) {}
EXPORT("_initialize") void _initialize(void) {}

/* ---- small helpers ---- */
static size_t str_len(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

static int bytes_equal(const u8 *a, size_t an, const char *b) {
  size_t bn = str_len(b);
  if (an != bn) return 0;
  for (size_t i = 0; i < an; i++)
    if (a[i] != (u8)b[i]) return 0;
  return 1;
}

/* A growable byte buffer. */
typedef struct {
  u8 *data;
  size_t len, cap;
  int failed;
} buf;

static void buf_put(buf *b, const void *p, size_t n) {
  if (b->failed) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    u8 *grown = malloc(cap);
    if (!grown) {
      b->failed = 1;
      return;
    }
    if (b->data) {
      memcpy(grown, b->data, b->len);
      free(b->data);
    }
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

static void buf_str(buf *b, const char *s) { buf_put(b, s, str_len(s)); }

static void buf_u32(buf *b, u32 v) {
  char digits[12];
  int n = 0;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) buf_put(b, &digits[--n], 1);
}

static void buf_free(buf *b) {
  free(b->data);
  b->data = 0;
  b->len = b->cap = 0;
}

static void log_bytes(u32 level, const u8 *p, size_t n) { proxy_log(level, p, n); }

static void log_msg(u32 level, const char *prefix, const u8 *detail, size_t detail_len) {
  buf b = {0};
  buf_str(&b, prefix);
  if (detail) buf_put(&b, detail, detail_len);
  if (!b.failed) log_bytes(level, b.data, b.len);
  buf_free(&b);
}

/* ---- header maps in proxy-wasm's serialized form ---- */
typedef struct {
  const char *key;
  const u8 *value;
  size_t value_len;
} pair;

static void put_le32(u8 *p, u32 v) {
  p[0] = (u8)v;
  p[1] = (u8)(v >> 8);
  p[2] = (u8)(v >> 16);
  p[3] = (u8)(v >> 24);
}

static void serialize_pairs(buf *out, const pair *pairs, u32 count) {
  u8 word[4];
  put_le32(word, count);
  buf_put(out, word, 4);
  for (u32 i = 0; i < count; i++) {
    put_le32(word, (u32)str_len(pairs[i].key));
    buf_put(out, word, 4);
    put_le32(word, (u32)pairs[i].value_len);
    buf_put(out, word, 4);
  }
  for (u32 i = 0; i < count; i++) {
    buf_put(out, pairs[i].key, str_len(pairs[i].key) + 1);
    buf_put(out, pairs[i].value, pairs[i].value_len);
    buf_put(out, "", 1);
  }
}

/* ---- plugin (root) contexts: the configuration ---- */
typedef struct root {
  u32 id;
  u8 *config;
  size_t config_len;
  struct root *next;
} root;
static root *roots;

static root *find_root(u32 id) {
  for (root *r = roots; r; r = r->next)
    if (r->id == id) return r;
  return 0;
}

/* ---- stream contexts ---- */
enum { ST_REQUEST_HEADERS = 0, ST_REQUEST_BODY, ST_RESPONSE_HEADERS, ST_RESPONSE_BODY, ST_COUNT };
static const char *const stage_names[ST_COUNT] = {"request_headers", "request_body", "response_headers", "response_body"};

typedef struct stream {
  u32 id;
  u32 root_id;
  int finished;         /* blocked, failed, or done: later callbacks pass through untouched */
  int ready[ST_COUNT];  /* the stage's data is complete and its callout not yet sent */
  int sent[ST_COUNT];   /* the stage's callout was sent */
  int in_flight;        /* a callout is out */
  int in_flight_stage;
  u32 call_id;
  int response_no_body; /* response headers came with end of stream */
  u8 tx[32];
  size_t tx_len;
  buf body[ST_COUNT];   /* request_headers: config + map; others: the stage's payload */
  struct stream *next;
} stream;
static stream *streams;

static stream *find_stream(u32 id) {
  for (stream *s = streams; s; s = s->next)
    if (s->id == id) return s;
  return 0;
}

static stream *find_call(u32 call_id) {
  for (stream *s = streams; s; s = s->next)
    if (s->in_flight && s->call_id == call_id) return s;
  return 0;
}

static void drop_stream(u32 id) {
  for (stream **p = &streams; *p; p = &(*p)->next) {
    if ((*p)->id == id) {
      stream *s = *p;
      *p = s->next;
      for (int i = 0; i < ST_COUNT; i++) buf_free(&s->body[i]);
      free(s);
      return;
    }
  }
}

/* ---- metrics: defined right before their first increment, ids cached by name ---- */
typedef struct metric {
  u32 id;
  size_t len;
  struct metric *next;
  u8 name[];
} metric;
static metric *metrics;

static void increment(const u8 *name, size_t len) {
  metric *m = metrics;
  while (m && !(m->len == len && memcmp(m->name, name, len) == 0)) m = m->next;
  if (!m) {
    u32 id;
    if (proxy_define_metric(METRIC_COUNTER, name, len, &id) != STATUS_OK) {
      log_msg(LOG_ERROR, "waf-e2e stand-in: cannot define metric ", name, len);
      return;
    }
    m = malloc(sizeof(metric) + len);
    if (!m) return;
    m->id = id;
    m->len = len;
    memcpy(m->name, name, len);
    m->next = metrics;
    metrics = m;
  }
  proxy_increment_metric(m->id, 1);
}

/* ---- failure: a visible 500, never a silent pass ---- */
static const char failure_body[] = "waf-e2e stand-in filter: the reference WAF service failed; see the proxy log\n";

static void fail(stream *s, const char *why, const u8 *detail, size_t detail_len) {
  buf b = {0};
  buf_str(&b, "waf-e2e stand-in: reference WAF service failed at stage ");
  buf_str(&b, stage_names[s->in_flight_stage]);
  buf_str(&b, ": ");
  buf_str(&b, why);
  if (detail) buf_put(&b, detail, detail_len > 2000 ? 2000 : detail_len);
  if (!b.failed) log_bytes(LOG_ERROR, b.data, b.len);
  buf_free(&b);
  s->finished = 1;
  s->in_flight = 0;
  proxy_send_local_response(500, (const u8 *)"waf_e2e_reference_waf_failed", 28, (const u8 *)failure_body,
                            sizeof(failure_body) - 1, 0, 0, -1);
}

/* ---- callouts ---- */
static const char cluster[] = "waf_e2e_reference_waf";

static int get_property(const char *path, size_t path_len, u8 **data, size_t *len) {
  return proxy_get_property((const u8 *)path, path_len, data, len) == STATUS_OK && *data && *len;
}

static void send_stage(stream *s, int stage) {
  pair headers[9];
  u32 n = 0;
  buf path = {0};
  buf_str(&path, "/v1/");
  buf_str(&path, stage_names[stage]);
  headers[n++] = (pair){":method", (const u8 *)"POST", 4};
  headers[n++] = (pair){":path", path.data, path.len};
  headers[n++] = (pair){":authority", (const u8 *)"waf-e2e-reference-waf", 21};
  headers[n++] = (pair){"content-type", (const u8 *)"application/octet-stream", 24};
  buf length = {0};
  u8 *source = 0, *destination = 0;
  size_t source_len = 0, destination_len = 0;
  if (stage == ST_REQUEST_HEADERS) {
    root *r = find_root(s->root_id);
    buf_u32(&length, r ? (u32)r->config_len : 0);
    headers[n++] = (pair){"x-waf-e2e-config-length", length.data, length.len};
    if (get_property("source\0address", 14, &source, &source_len))
      headers[n++] = (pair){"x-waf-e2e-source", source, source_len};
    if (get_property("destination\0address", 19, &destination, &destination_len))
      headers[n++] = (pair){"x-waf-e2e-destination", destination, destination_len};
  } else {
    headers[n++] = (pair){"x-waf-e2e-tx", s->tx, s->tx_len};
  }
  if (stage == ST_RESPONSE_HEADERS && s->response_no_body)
    headers[n++] = (pair){"x-waf-e2e-end-of-stream", (const u8 *)"1", 1};
  buf serialized = {0};
  serialize_pairs(&serialized, headers, n);
  s->sent[stage] = 1;
  s->ready[stage] = 0;
  s->in_flight_stage = stage;
  u32 call_id = 0;
  u32 status = 1;
  if (!serialized.failed && !path.failed && !length.failed && !s->body[stage].failed)
    status = proxy_http_call((const u8 *)cluster, sizeof(cluster) - 1, serialized.data, serialized.len, s->body[stage].data,
                             s->body[stage].len, 0, 0, 5000, &call_id);
  buf_free(&serialized);
  buf_free(&path);
  buf_free(&length);
  free(source);
  free(destination);
  buf_free(&s->body[stage]);
  if (status != STATUS_OK) {
    buf code = {0};
    buf_u32(&code, status);
    fail(s, "proxy_http_call to cluster waf_e2e_reference_waf was refused, proxy status ", code.data, code.len);
    buf_free(&code);
    return;
  }
  s->in_flight = 1;
  s->call_id = call_id;
}

/* Sends the earliest ready stage when no callout is out. */
static void pump(stream *s) {
  if (s->finished || s->in_flight) return;
  for (int stage = 0; stage < ST_COUNT; stage++) {
    if (s->ready[stage]) {
      send_stage(s, stage);
      return;
    }
  }
}

/* Resumes the side of `stage` unless a later stage of the same side is still waiting for its decision.
 * Envoy 1.37.0 (measured) buffers a body itself while the filter's headers are stopped and calls the
 * body callback only after they continue, so the guard is for hosts that deliver the body earlier. */
static void resume_after(stream *s, int stage) {
  int request_side = stage <= ST_REQUEST_BODY;
  int later = request_side ? ST_REQUEST_BODY : ST_RESPONSE_BODY;
  if (stage < later && s->ready[later]) return; /* its callout goes next; its answer resumes the side */
  proxy_continue_stream(request_side ? STREAM_REQUEST : STREAM_RESPONSE);
}

/* ---- context lifecycle ---- */
EXPORT("proxy_on_context_create") void proxy_on_context_create(u32 id, u32 parent) {
  if (parent == 0) {
    root *r = malloc(sizeof(root));
    if (!r) return;
    memset(r, 0, sizeof(root));
    r->id = id;
    r->next = roots;
    roots = r;
    return;
  }
  stream *s = malloc(sizeof(stream));
  if (!s) return;
  memset(s, 0, sizeof(stream));
  s->id = id;
  s->root_id = parent;
  s->next = streams;
  streams = s;
}

EXPORT("proxy_on_vm_start") u32 proxy_on_vm_start(u32 root_id, size_t vm_config_size) { return 1; }

EXPORT("proxy_on_configure") u32 proxy_on_configure(u32 root_id, size_t size) {
  root *r = find_root(root_id);
  if (!r) return 0;
  u8 *data = 0;
  size_t len = 0;
  if (size && proxy_get_buffer_bytes(BUF_PLUGIN_CONFIGURATION, 0, size, &data, &len) != STATUS_OK) {
    log_msg(LOG_ERROR, "waf-e2e stand-in: cannot read the plugin configuration", 0, 0);
    return 0;
  }
  free(r->config);
  r->config = data;
  r->config_len = len;
  return 1;
}

EXPORT("proxy_on_done") u32 proxy_on_done(u32 id) { return 1; }

EXPORT("proxy_on_delete") void proxy_on_delete(u32 id) { drop_stream(id); }

/* ---- request ---- */
static u32 total_metric;
static int total_defined;

EXPORT("proxy_on_request_headers") u32 proxy_on_request_headers(u32 id, size_t num_headers, u32 end_of_stream) {
  stream *s = find_stream(id);
  if (!s) return ACTION_CONTINUE;
  if (!total_defined) {
    if (proxy_define_metric(METRIC_COUNTER, (const u8 *)"waf_filter.tx.total", 19, &total_metric) == STATUS_OK) total_defined = 1;
  }
  if (total_defined) proxy_increment_metric(total_metric, 1);
  root *r = find_root(s->root_id);
  u8 *map = 0;
  size_t map_len = 0;
  proxy_get_header_map_pairs(MAP_REQUEST_HEADERS, &map, &map_len);
  if (r && r->config_len) buf_put(&s->body[ST_REQUEST_HEADERS], r->config, r->config_len);
  buf_put(&s->body[ST_REQUEST_HEADERS], map, map_len);
  free(map);
  s->ready[ST_REQUEST_HEADERS] = 1;
  pump(s);
  return ACTION_PAUSE;
}

static u32 body_callback(u32 id, size_t size, u32 end_of_stream, int stage, u32 buffer) {
  stream *s = find_stream(id);
  if (!s || s->finished) return ACTION_CONTINUE;
  if (!end_of_stream) return ACTION_PAUSE; /* keep buffering until the whole body is there */
  u8 *data = 0;
  size_t len = 0;
  if (size && proxy_get_buffer_bytes(buffer, 0, size, &data, &len) != STATUS_OK) {
    s->in_flight_stage = stage;
    fail(s, "cannot read the buffered body", 0, 0);
    return ACTION_PAUSE;
  }
  buf_put(&s->body[stage], data, len);
  free(data);
  s->ready[stage] = 1;
  pump(s);
  return ACTION_PAUSE;
}

EXPORT("proxy_on_request_body") u32 proxy_on_request_body(u32 id, size_t size, u32 end_of_stream) {
  return body_callback(id, size, end_of_stream, ST_REQUEST_BODY, BUF_REQUEST_BODY);
}

/* ---- response ---- */
EXPORT("proxy_on_response_headers") u32 proxy_on_response_headers(u32 id, size_t num_headers, u32 end_of_stream) {
  stream *s = find_stream(id);
  if (!s || s->finished) return ACTION_CONTINUE; /* e.g. the local reply of a block passing through */
  u8 *map = 0;
  size_t map_len = 0;
  proxy_get_header_map_pairs(MAP_RESPONSE_HEADERS, &map, &map_len);
  buf_put(&s->body[ST_RESPONSE_HEADERS], map, map_len);
  free(map);
  s->response_no_body = end_of_stream ? 1 : 0;
  s->ready[ST_RESPONSE_HEADERS] = 1;
  pump(s);
  return ACTION_PAUSE;
}

EXPORT("proxy_on_response_body") u32 proxy_on_response_body(u32 id, size_t size, u32 end_of_stream) {
  return body_callback(id, size, end_of_stream, ST_RESPONSE_BODY, BUF_RESPONSE_BODY);
}

/* ---- the service's answer ---- */
static int call_header(const char *name, u8 **value, size_t *len) {
  *value = 0;
  *len = 0;
  return proxy_get_header_map_value(MAP_CALL_RESPONSE_HEADERS, (const u8 *)name, str_len(name), value, len) == STATUS_OK;
}

static u32 parse_u32(const u8 *p, size_t n, int *ok) {
  u32 v = 0;
  *ok = n > 0 && n < 10;
  for (size_t i = 0; i < n && *ok; i++) {
    if (p[i] < '0' || p[i] > '9') *ok = 0;
    v = v * 10 + (u32)(p[i] - '0');
  }
  return v;
}

static void count_metrics(const u8 *list, size_t len) {
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i == len || list[i] == ' ') {
      if (i > start) increment(list + start, i - start);
      start = i + 1;
    }
  }
}

EXPORT("proxy_on_http_call_response")
void proxy_on_http_call_response(u32 context_id, u32 call_id, size_t num_headers, size_t body_size, size_t num_trailers) {
  stream *s = find_call(call_id);
  if (!s) return; /* the stream is gone */
  proxy_set_effective_context(s->id);
  if (context_id != s->id) {
    log_msg(LOG_DEBUG, "waf-e2e stand-in: http call response arrived on another context than its stream", 0, 0);
  }
  int stage = s->in_flight_stage;
  s->in_flight = 0;
  if (num_headers == 0) {
    fail(s, "no answer (connection failure or 5000 ms timeout)", 0, 0);
    return;
  }
  u8 *status = 0, *action = 0, *block_status = 0, *tx = 0, *names = 0, *body = 0;
  size_t status_len, action_len, block_len, tx_len, names_len, body_len = 0;
  call_header(":status", &status, &status_len);
  if (body_size) proxy_get_buffer_bytes(BUF_CALL_RESPONSE_BODY, 0, body_size, &body, &body_len);
  if (!bytes_equal(status, status_len, "200")) {
    fail(s, "HTTP status ", status, status_len);
    if (body) log_msg(LOG_ERROR, "waf-e2e stand-in: the reference WAF service said: ", body, body_len);
    free(status);
    free(body);
    return;
  }
  call_header("x-waf-e2e-action", &action, &action_len);
  call_header("x-waf-e2e-status", &block_status, &block_len);
  call_header("x-waf-e2e-tx", &tx, &tx_len);
  call_header("x-waf-e2e-metrics", &names, &names_len);
  int blocking = bytes_equal(action, action_len, "block");
  int ok = 1;
  u32 code = blocking ? parse_u32(block_status, block_len, &ok) : 0;
  if (!(blocking || bytes_equal(action, action_len, "continue")) || (blocking && (!ok || code < 100 || code > 599))) {
    fail(s, "malformed answer (x-waf-e2e-action / x-waf-e2e-status)", action, action_len);
  } else {
    if (stage == ST_REQUEST_HEADERS && tx && tx_len <= sizeof(s->tx)) {
      memcpy(s->tx, tx, tx_len);
      s->tx_len = tx_len;
    }
    if (names) count_metrics(names, names_len);
    if (body && body_len) {
      buf line = {0};
      buf_str(&line, "AuditLog:");
      buf_put(&line, body, body_len);
      if (!line.failed) log_bytes(LOG_INFO, line.data, line.len);
      buf_free(&line);
    }
    if (blocking) {
      s->finished = 1;
      proxy_send_local_response(code, (const u8 *)"waf_e2e_standin_blocked", 23, 0, 0, 0, 0, -1);
    } else {
      if (stage == ST_RESPONSE_BODY || (stage == ST_RESPONSE_HEADERS && s->response_no_body)) s->finished = 1;
      resume_after(s, stage);
      pump(s);
    }
  }
  free(status);
  free(action);
  free(block_status);
  free(tx);
  free(names);
  free(body);
}
