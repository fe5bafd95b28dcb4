/*
 * µWebSockets echo server for the side-by-side benchmark.
 *
 * µWebSockets (uWS + uSockets, C++) has no package in the registries this project builds from;
 * PyPI's `socketify` ships it prebuilt as `libsocketify_linux_amd64.so` (uWS's C API, with
 * uSockets running on libuv). `build_uws.sh` downloads that package and compiles this file
 * against it. The declarations below are the few functions of that C API an echo needs,
 * written from socketify's own cffi declarations (socketify 0.0.31, `native.py`).
 *
 * Same contract as the Rust echo servers: the first argument is HOST:PORT (port 0 picks one),
 * it prints `listening on HOST:PORT` once bound, and exits when its stdin closes. Every text or
 * binary message goes back as it came; µWebSockets answers pings and closes itself, and corks
 * the sends made while it handles one read, so they leave in one write. No compression.
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
void uws_app_listen_with_config(int ssl, uws_app_t *app, uws_app_listen_config_t config,
                                uws_listen_handler handler, void *user_data);
int us_socket_local_port(int ssl, struct us_socket_t *s);

static char host[256];

static void on_message(uws_websocket_t *ws, const char *message, size_t length, int opcode,
                       void *user_data) {
    (void)user_data;
    uws_ws_send(0, ws, message, length, opcode);
}

static void on_listen(struct us_listen_socket_t *listen_socket, uws_app_listen_config_t config,
                      void *user_data) {
    (void)config;
    (void)user_data;
    if (!listen_socket) {
        fprintf(stderr, "uws-echo: cannot listen on %s\n", host);
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
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:0";
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) {
        fprintf(stderr, "usage: uws-echo HOST:PORT\n");
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
    uws_app_t *app = uws_create_app(0, options);

    uws_socket_behavior_t behavior;
    memset(&behavior, 0, sizeof behavior);
    behavior.maxPayloadLength = 64u << 20;
    behavior.idleTimeout = 0; /* like the Rust servers: no idle timeout */
    behavior.maxBackpressure = 64u << 20;
    behavior.message = on_message;
    uws_ws(0, app, "/*", behavior, NULL);

    uws_app_listen_config_t config = {port, host, 0};
    uws_app_listen_with_config(0, app, config, on_listen, NULL);
    socketify_loop_run(loop, 0);
    return 0;
}
