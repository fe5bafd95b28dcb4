/*
 * µWebSockets pub/sub server for the fan-out benchmark (`fullduplex-bench fanout`).
 *
 * Built by `build_uws.sh` against PyPI socketify's prebuilt µWebSockets (its C API, uSockets on
 * libuv), like `uws_echo.c`. It speaks the subset of the hub's protocol the generator uses:
 *
 *   client -> server  {"type":"subscribe","topic":T}           answered {"type":"subscribed","topic":T}
 *   client -> server  {"type":"publish","topic":T,"data":D}    (D must be the last member)
 *   server -> client  {"type":"message","topic":T,"data":D}    to every subscriber of T
 *
 * Subscriptions and delivery are µWebSockets' own pub/sub: `uws_ws_subscribe` and
 * `uws_publish` (its topic tree, which queues a published message for each subscriber and
 * writes each subscriber's queue once per event-loop iteration). The JSON is not parsed: the
 * topic and the data are found by their keys, which is all the generator's messages need.
 *
 *   uws-pubsub [--compression] HOST:PORT
 *
 * With `--compression` it negotiates permessage-deflate with µWebSockets' SHARED_COMPRESSOR
 * (no context takeover, one zlib stream for the whole server) and publishes with compress set.
 * Prints `listening on HOST:PORT` once bound and exits when stdin closes.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct us_socket_context_options_t {
    const char *key_file_name, *cert_file_name, *passphrase, *dh_params_file_name, *ca_file_name,
        *ssl_ciphers;
    int ssl_prefer_low_memory_usage;
};
typedef struct { int port; const char *host; int options; } uws_app_listen_config_t;
typedef struct uws_app_s uws_app_t;
typedef struct uws_websocket_s uws_websocket_t;
struct us_listen_socket_t;
struct us_socket_t;

typedef void (*uws_websocket_handler)(uws_websocket_t *ws, void *user_data);
typedef void (*uws_websocket_message_handler)(uws_websocket_t *ws, const char *message,
                                              size_t length, int opcode, void *user_data);
typedef struct {
    int compression;
    unsigned int maxPayloadLength;
    unsigned short idleTimeout;
    unsigned int maxBackpressure;
    bool closeOnBackpressureLimit;
    bool resetIdleTimeoutOnSend;
    bool sendPingsAutomatically;
    unsigned short maxLifetime;
    void *upgrade;
    uws_websocket_handler open;
    uws_websocket_message_handler message;
    uws_websocket_handler drain;
    void *ping, *pong, *close, *subscription;
} uws_socket_behavior_t;
typedef void (*uws_listen_handler)(struct us_listen_socket_t *listen_socket,
                                   uws_app_listen_config_t config, void *user_data);

void *socketify_create_loop(void);
void *socketify_get_native_loop(void *loop);
int socketify_loop_run(void *loop, int mode);
void *uws_get_loop_with_native(void *native_loop);
uws_app_t *uws_create_app(int ssl, struct us_socket_context_options_t options);
void uws_ws(int ssl, uws_app_t *app, const char *pattern, uws_socket_behavior_t behavior,
            void *user_data);
int uws_ws_send(int ssl, uws_websocket_t *ws, const char *message, size_t length, int opcode);
bool uws_ws_subscribe(int ssl, uws_websocket_t *ws, const char *topic, size_t length);
bool uws_publish(int ssl, uws_app_t *app, const char *topic, size_t topic_length,
                 const char *message, size_t message_length, int opcode, bool compress);
void uws_app_listen_with_config(int ssl, uws_app_t *app, uws_app_listen_config_t config,
                                uws_listen_handler handler, void *user_data);
int us_socket_local_port(int ssl, struct us_socket_t *s);

enum { TEXT = 1, SHARED_COMPRESSOR = 1 };

static char host[256];
static uws_app_t *app;
static bool compress;
static char *out;
static size_t out_cap;

/* The string value of "key" in message, or NULL. */
static const char *string_value(const char *message, size_t length, const char *key,
                                size_t *value_length) {
    size_t key_length = strlen(key);
    const char *end = message + length;
    const char *at = memmem(message, length, key, key_length);
    if (!at) return NULL;
    at += key_length;
    const char *close = memchr(at, '"', (size_t)(end - at));
    if (!close) return NULL;
    *value_length = (size_t)(close - at);
    return at;
}

static bool reserve(size_t n) {
    if (n <= out_cap) return true;
    size_t cap = n * 2;
    char *grown = realloc(out, cap);
    if (!grown) return false;
    out = grown;
    out_cap = cap;
    return true;
}

static void on_message(uws_websocket_t *ws, const char *message, size_t length, int opcode,
                       void *user_data) {
    (void)user_data;
    if (opcode != TEXT) return;
    size_t topic_length;
    const char *topic = string_value(message, length, "\"topic\":\"", &topic_length);
    if (!topic) return;
    if (memmem(message, length, "\"type\":\"subscribe\"", 18)) {
        uws_ws_subscribe(0, ws, topic, topic_length);
        static const char head[] = "{\"type\":\"subscribed\",\"topic\":\"";
        if (!reserve(sizeof head + topic_length + 4)) return;
        size_t n = 0;
        memcpy(out, head, sizeof head - 1);
        n += sizeof head - 1;
        memcpy(out + n, topic, topic_length);
        n += topic_length;
        memcpy(out + n, "\"}", 2);
        n += 2;
        uws_ws_send(0, ws, out, n, TEXT);
    } else if (memmem(message, length, "\"type\":\"publish\"", 16)) {
        const char *data = memmem(message, length, "\"data\":", 7);
        const char *last = message + length;
        while (last > message && last[-1] != '}') last--;
        if (!data || last <= data + 7) return;
        data += 7;
        size_t data_length = (size_t)(last - 1 - data); /* without the message's closing } */
        static const char head[] = "{\"type\":\"message\",\"topic\":\"";
        if (!reserve(sizeof head + topic_length + data_length + 16)) return;
        size_t n = 0;
        memcpy(out, head, sizeof head - 1);
        n += sizeof head - 1;
        memcpy(out + n, topic, topic_length);
        n += topic_length;
        memcpy(out + n, "\",\"data\":", 9);
        n += 9;
        memcpy(out + n, data, data_length);
        n += data_length;
        out[n++] = '}';
        uws_publish(0, app, topic, topic_length, out, n, TEXT, compress);
    }
}

static void on_listen(struct us_listen_socket_t *listen_socket, uws_app_listen_config_t config,
                      void *user_data) {
    (void)config;
    (void)user_data;
    if (!listen_socket) {
        fprintf(stderr, "uws-pubsub: cannot listen on %s\n", host);
        exit(1);
    }
    int port = us_socket_local_port(0, (struct us_socket_t *)listen_socket);
    printf("listening on %s:%d\n", host, port);
    fflush(stdout);
}

static void *exit_on_stdin_eof(void *arg) {
    (void)arg;
    char buf[256];
    while (read(0, buf, sizeof buf) > 0) {
    }
    _exit(0);
}

int main(int argc, char **argv) {
    const char *addr = "127.0.0.1:0";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--compression") == 0) compress = true;
        else addr = argv[i];
    }
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) {
        fprintf(stderr, "usage: uws-pubsub [--compression] HOST:PORT\n");
        return 2;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    int port = atoi(colon + 1);

    pthread_t watcher;
    pthread_create(&watcher, NULL, exit_on_stdin_eof, NULL);

    void *loop = socketify_create_loop();
    /* Must come before uws_create_app, or the app creates a loop of its own. */
    uws_get_loop_with_native(socketify_get_native_loop(loop));
    struct us_socket_context_options_t options;
    memset(&options, 0, sizeof options);
    app = uws_create_app(0, options);

    uws_socket_behavior_t behavior;
    memset(&behavior, 0, sizeof behavior);
    behavior.compression = compress ? SHARED_COMPRESSOR : 0;
    behavior.maxPayloadLength = 1u << 20;
    behavior.idleTimeout = 0; /* no idle timeout, no pings: like the other servers here */
    /* Large enough that no subscriber's queue is ever dropped during a burst. */
    behavior.maxBackpressure = 64u << 20;
    behavior.message = on_message;
    uws_ws(0, app, "/*", behavior, NULL);

    uws_app_listen_config_t config = {port, host, 0};
    uws_app_listen_with_config(0, app, config, on_listen, NULL);
    socketify_loop_run(loop, 0);
    return 0;
}
