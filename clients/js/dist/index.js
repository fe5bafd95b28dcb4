/**
 * Client SDK for the fullduplex push server (`fdx serve`, see PROTOCOL.md).
 *
 * One ES module without runtime dependencies: it runs in browsers (the hub serves it at
 * `/sdk/index.js`) and in Node with a WebSocket implementation such as `ws`.
 *
 * ```js
 * import { Client } from "/sdk/index.js";
 * const client = new Client("ws://127.0.0.1:8080/ws");
 * client.on("state", (state) => console.log(state));
 * const sub = client.subscribe("chat", { onMessage: (data, meta) => console.log(meta.offset, data) });
 * const { offset } = await client.publish("chat", { text: "hi" });
 * ```
 *
 * This file is deliberately one module: the hub embeds the compiled `dist/index.js` alone.
 */
/**
 * A refused or failed request. `code` is the server's error code (`forbidden`,
 * `rate_limited`, `unavailable`... see PROTOCOL.md) or one of the client's own:
 * `timeout` (no answer in time), `queue_full` (the publish queue is full),
 * `connection_lost` (the connection dropped after the publish was sent and before its answer:
 * it may or may not have been published, and it is not sent again), `closed` (`close()` was
 * called), `no_websocket` (no WebSocket implementation).
 */
export class FdxError extends Error {
    constructor(code, message, topic) {
        super(message);
        this.name = "FdxError";
        this.code = code;
        this.topic = topic;
    }
}
// ----------------------------------------------------------------------------- backoff
export const DEFAULT_RECONNECT = Object.freeze({
    minDelay: 250,
    maxDelay: 10000,
    factor: 2,
    jitter: 0.5,
});
/**
 * The delay before reconnect attempt `attempt` (0 for the first attempt after a drop):
 * `base = min(maxDelay, minDelay * factor ** attempt)`, minus up to `jitter * base` at random,
 * so always within `[base * (1 - jitter), base]` and never above `maxDelay`.
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
    const o = { ...DEFAULT_RECONNECT, ...options };
    const minDelay = Math.max(0, o.minDelay);
    const maxDelay = Math.max(minDelay, o.maxDelay);
    const factor = Math.max(1, o.factor);
    const jitter = Math.min(1, Math.max(0, o.jitter));
    const exponent = Math.max(0, Math.floor(attempt));
    const base = Math.min(maxDelay, minDelay * Math.pow(factor, exponent));
    const r = Math.min(1, Math.max(0, random()));
    return base * (1 - jitter * r);
}
// ------------------------------------------------------------------------------ client
const OPEN = 1;
/**
 * A connection to the push server that reconnects by itself. See the module documentation
 * and clients/js/README.md.
 */
export class Client {
    constructor(url, options = {}) {
        this.socket = null;
        this.currentState = "connecting";
        /** Whether the first "connecting" was reported (the state starts as "connecting"). */
        this.announced = false;
        this.closedByUser = false;
        this.attempt = 0;
        this.reconnectTimer = null;
        this.connectTimer = null;
        this.nextId = 1;
        this.subs = new Map();
        /** Sent requests waiting for their answer, by id. */
        this.pending = new Map();
        /** Publishes not sent yet (in order). */
        this.queue = [];
        /** Presence and info requests not sent yet (after a drop they are asked again). */
        this.unsentPresence = [];
        this.listeners = {
            state: [],
            close: [],
            error: [],
        };
        this.url = url;
        this.token = options.token;
        this.getToken = options.getToken;
        this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
        this.reconnectOptions = { ...DEFAULT_RECONNECT, ...options.reconnect };
        this.queueOptions = { max: 100, timeoutMs: 10000, ...options.publishQueue };
        this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
        this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
        this.needToken = this.token === undefined && this.getToken !== undefined;
        // Connect at once, but after the caller could add its listeners (it sees "connecting").
        void Promise.resolve().then(() => this.connect());
    }
    /** The current connection state. */
    get state() {
        return this.currentState;
    }
    /** Adds a listener; returns a function that removes it. */
    on(event, listener) {
        this.listeners[event].push(listener);
        return () => this.off(event, listener);
    }
    off(event, listener) {
        const list = this.listeners[event];
        const i = list.indexOf(listener);
        if (i >= 0)
            list.splice(i, 1);
    }
    /**
     * Subscribes to `topic` (one subscription per topic and client). Messages are delivered once
     * each, in offset order, also across reconnects (the client resubscribes with `since`).
     */
    subscribe(topic, options = {}) {
        if (this.closedByUser)
            throw new FdxError("closed", "the client is closed", topic);
        if (this.subs.has(topic))
            throw new Error(`already subscribed to ${JSON.stringify(topic)}`);
        const state = {
            topic,
            options,
            active: true,
            requestId: null,
            live: false,
            sentSince: false,
            epoch: options.epoch ?? null,
            offset: options.since ?? null,
            retryTimer: null,
        };
        this.subs.set(topic, state);
        if (this.isOpen())
            this.sendSubscribe(state);
        const drop = () => this.dropSubscription(state, true);
        return {
            get topic() {
                return state.topic;
            },
            get epoch() {
                return state.epoch;
            },
            get offset() {
                return state.offset;
            },
            get active() {
                return state.active;
            },
            unsubscribe: drop,
        };
    }
    /**
     * Publishes `data` (any JSON value). Resolves with the server's acknowledgement; rejects with
     * an {@link FdxError}. While not connected the publish waits in a bounded queue; a publish
     * is never sent twice.
     */
    publish(topic, data) {
        return new Promise((resolve, reject) => {
            if (this.closedByUser)
                return reject(new FdxError("closed", "the client is closed", topic));
            const id = this.nextId++;
            const message = { type: "publish", topic, data: data === undefined ? null : data, id };
            if (this.isOpen()) {
                this.sendRequest(id, "publish", topic, message, resolve, reject);
                return;
            }
            if (this.queue.length >= this.queueOptions.max) {
                return reject(new FdxError("queue_full", `not connected and ${this.queue.length} publishes wait already`, topic));
            }
            const entry = { id, message, resolve, reject, timer: null };
            entry.timer = setTimeout(() => {
                const i = this.queue.indexOf(entry);
                if (i >= 0)
                    this.queue.splice(i, 1);
                reject(new FdxError("timeout", `not connected within ${this.queueOptions.timeoutMs} ms`, topic));
            }, this.queueOptions.timeoutMs);
            this.queue.push(entry);
        });
    }
    /** Who is in `topic`'s presence (clients that subscribed with `presence: true`). */
    presence(topic) {
        return new Promise((resolve, reject) => {
            if (this.closedByUser)
                return reject(new FdxError("closed", "the client is closed", topic));
            const id = this.nextId++;
            const message = { type: "presence", topic, id };
            this.sendRequest(id, "presence", topic, message, resolve, reject);
        });
    }
    /**
     * What the server knows of this connection: its client id, its user, and the transport that
     * carries it (`"http1"`, or `"h2"` for a WebSocket on an HTTP/2 stream). Asked when connected.
     */
    info() {
        return new Promise((resolve, reject) => {
            if (this.closedByUser)
                return reject(new FdxError("closed", "the client is closed"));
            const id = this.nextId++;
            const message = { type: "info", id };
            this.sendRequest(id, "info", undefined, message, resolve, reject);
        });
    }
    /** Closes the connection with 1000 and stops reconnecting; rejects what still waits. */
    close() {
        if (this.closedByUser)
            return;
        this.closedByUser = true;
        this.clearTimer("reconnectTimer");
        this.clearTimer("connectTimer");
        const socket = this.socket;
        this.socket = null;
        if (socket) {
            detach(socket);
            try {
                socket.close(1000, "client closed");
            }
            catch {
                // already closing
            }
        }
        const closed = () => new FdxError("closed", "the client was closed");
        for (const entry of this.queue.splice(0)) {
            clearTimeout(entry.timer);
            entry.reject(closed());
        }
        for (const [id, request] of this.pending) {
            this.pending.delete(id);
            clearTimeout(request.timer);
            request.reject(closed());
        }
        this.unsentPresence.length = 0;
        for (const sub of this.subs.values()) {
            sub.active = false;
            clearTimeout(sub.retryTimer);
        }
        this.subs.clear();
        this.setState("disconnected");
        if (socket)
            this.emit("close", { code: 1000, reason: "client closed", wasOpen: true, reconnectIn: null });
    }
    // ---------------------------------------------------------------------- connection
    isOpen() {
        return this.socket !== null && this.currentState === "connected" && this.socket.readyState === OPEN;
    }
    async connect() {
        this.reconnectTimer = null;
        if (this.closedByUser || this.socket !== null)
            return;
        if (!this.announced) {
            this.announced = true;
            this.emit("state", "connecting");
        }
        else {
            this.setState("connecting");
        }
        if (this.needToken && this.getToken) {
            try {
                this.token = await this.getToken();
                this.needToken = false;
            }
            catch (error) {
                if (this.closedByUser)
                    return;
                this.emit("error", asError(error, "getToken failed"));
                this.scheduleReconnect(0, "getToken failed", false);
                return;
            }
            if (this.closedByUser)
                return;
        }
        const Impl = this.WebSocketImpl;
        if (!Impl) {
            this.emit("error", new FdxError("no_websocket", "no WebSocket implementation: pass options.WebSocket"));
            this.closedByUser = true;
            this.setState("disconnected");
            return;
        }
        let socket;
        try {
            socket = new Impl(this.connectUrl());
        }
        catch (error) {
            this.emit("error", asError(error, "cannot create the WebSocket"));
            this.scheduleReconnect(1006, "cannot create the WebSocket", false);
            return;
        }
        this.socket = socket;
        let opened = false;
        this.connectTimer = setTimeout(() => {
            this.connectTimer = null;
            if (this.socket !== socket || opened)
                return;
            this.abandon(socket, 1006, `not open after ${this.connectTimeoutMs} ms`, false);
        }, this.connectTimeoutMs);
        socket.onopen = () => {
            if (this.socket !== socket)
                return;
            opened = true;
            this.clearTimer("connectTimer");
            this.attempt = 0;
            this.setState("connected");
            this.onOpen();
        };
        socket.onmessage = (event) => {
            if (this.socket !== socket)
                return;
            if (typeof event.data !== "string")
                return;
            let message;
            try {
                message = JSON.parse(event.data);
            }
            catch {
                return;
            }
            if (message && typeof message === "object" && !Array.isArray(message)) {
                this.handle(message);
            }
        };
        socket.onclose = (event) => {
            if (this.socket !== socket)
                return;
            this.abandon(socket, event.code ?? 1006, event.reason ?? "", opened);
        };
        socket.onerror = () => {
            // A close event follows.
        };
    }
    connectUrl() {
        if (this.token === undefined)
            return this.url;
        const hash = this.url.indexOf("#");
        const base = hash >= 0 ? this.url.slice(0, hash) : this.url;
        const separator = base.includes("?") ? "&" : "?";
        return base + separator + "token=" + encodeURIComponent(this.token);
    }
    /** The connection is gone (closed, or given up): clean up and schedule the next attempt. */
    abandon(socket, code, reason, wasOpen) {
        this.socket = null;
        this.clearTimer("connectTimer");
        detach(socket);
        if (socket.readyState <= OPEN) {
            try {
                socket.close();
            }
            catch {
                // closing already
            }
        }
        // Sent publishes without an answer are never sent again: they may have been published.
        for (const [id, request] of this.pending) {
            if (request.kind === "publish") {
                this.pending.delete(id);
                clearTimeout(request.timer);
                request.reject(new FdxError("connection_lost", "the connection dropped before the publish was acknowledged (it may have been published)", request.topic));
            }
            else if (request.kind === "refresh") {
                this.pending.delete(id);
                clearTimeout(request.timer);
                request.resolve(undefined);
            }
            else if (!this.unsentPresence.includes(id)) {
                this.unsentPresence.push(id); // asked again on the next connection, same deadline
            }
        }
        for (const sub of this.subs.values()) {
            sub.requestId = null;
            sub.live = false;
            clearTimeout(sub.retryTimer);
            sub.retryTimer = null;
        }
        if (code === 4001)
            this.needToken = this.getToken !== undefined; // token expired
        this.scheduleReconnect(code, reason, wasOpen);
    }
    scheduleReconnect(code, reason, wasOpen) {
        if (this.closedByUser)
            return;
        if (!wasOpen)
            this.needToken = this.getToken !== undefined;
        const delay = backoffDelay(this.attempt, this.reconnectOptions);
        this.attempt += 1;
        this.setState("disconnected");
        this.reconnectTimer = setTimeout(() => void this.connect(), delay);
        this.emit("close", { code, reason, wasOpen, reconnectIn: delay });
    }
    onOpen() {
        for (const sub of this.subs.values())
            this.sendSubscribe(sub);
        for (const id of this.unsentPresence.splice(0)) {
            const request = this.pending.get(id);
            if (request)
                this.rawSend(request.message);
        }
        for (const entry of this.queue.splice(0)) {
            clearTimeout(entry.timer);
            // If the socket fails meanwhile, sendRequest puts it back into the queue.
            const topic = entry.message.topic;
            this.sendRequest(entry.id, "publish", topic, entry.message, entry.resolve, entry.reject);
        }
    }
    rawSend(message) {
        const socket = this.socket;
        if (!socket || socket.readyState !== OPEN)
            return false;
        try {
            socket.send(JSON.stringify(message));
            return true;
        }
        catch {
            return false;
        }
    }
    /** Sends a request now if connected (else it waits for the next connection) with a deadline. */
    sendRequest(id, kind, topic, message, resolve, reject) {
        const request = { kind, topic, message, resolve, reject, timer: null };
        request.timer = setTimeout(() => {
            this.pending.delete(id);
            const i = this.unsentPresence.indexOf(id);
            if (i >= 0)
                this.unsentPresence.splice(i, 1);
            reject(new FdxError("timeout", `no answer to ${kind} within ${this.requestTimeoutMs} ms`, topic));
        }, this.requestTimeoutMs);
        this.pending.set(id, request);
        const sent = this.isOpen() && this.rawSend(message);
        if (!sent) {
            if (kind === "publish") {
                // Not sent: wait in the queue like a publish made while disconnected.
                this.pending.delete(id);
                clearTimeout(request.timer);
                const entry = { id, message, resolve, reject, timer: null };
                entry.timer = setTimeout(() => {
                    const i = this.queue.indexOf(entry);
                    if (i >= 0)
                        this.queue.splice(i, 1);
                    reject(new FdxError("timeout", `not connected within ${this.queueOptions.timeoutMs} ms`, topic));
                }, this.queueOptions.timeoutMs);
                this.queue.push(entry);
            }
            else if (kind === "presence" || kind === "info") {
                this.unsentPresence.push(id); // asked when connected
            }
            else {
                this.pending.delete(id);
                clearTimeout(request.timer);
                resolve(undefined);
            }
        }
    }
    sendSubscribe(sub) {
        const id = this.nextId++;
        const message = { type: "subscribe", topic: sub.topic, id };
        sub.sentSince = sub.offset !== null;
        if (sub.offset !== null) {
            message.since = sub.offset;
            if (sub.epoch !== null)
                message.epoch = sub.epoch;
        }
        if (sub.options.presence)
            message.presence = true;
        sub.requestId = id;
        sub.live = false;
        this.rawSend(message);
    }
    dropSubscription(sub, tell) {
        if (!sub.active)
            return;
        sub.active = false;
        clearTimeout(sub.retryTimer);
        if (this.subs.get(sub.topic) === sub)
            this.subs.delete(sub.topic);
        if (tell && sub.requestId !== null) {
            this.rawSend({ type: "unsubscribe", topic: sub.topic, id: this.nextId++ });
        }
        sub.requestId = null;
    }
    // ------------------------------------------------------------------------ messages
    handle(message) {
        const topic = typeof message.topic === "string" ? message.topic : undefined;
        const sub = topic !== undefined ? this.subs.get(topic) : undefined;
        switch (message.type) {
            case "message":
                if (sub && sub.live)
                    this.onMessage(sub, message);
                break;
            case "subscribed":
                if (sub && (message.id === undefined || message.id === sub.requestId))
                    this.onSubscribed(sub, message);
                break;
            case "gap":
                if (sub && sub.live)
                    this.onGapEvent(sub, message);
                break;
            case "join":
            case "leave":
                if (sub && sub.live) {
                    const entry = { client: String(message.client), user: (message.user ?? null) };
                    const callback = message.type === "join" ? sub.options.onJoin : sub.options.onLeave;
                    if (callback)
                        this.callback(() => callback(entry));
                }
                break;
            case "published": {
                const request = this.takePending(message, "publish");
                if (request)
                    request.resolve({ offset: message.offset, epoch: message.epoch });
                break;
            }
            case "presence": {
                const request = this.takePending(message, "presence");
                if (request)
                    request.resolve(Array.isArray(message.clients) ? message.clients : []);
                break;
            }
            case "info": {
                const request = this.takePending(message, "info");
                if (request) {
                    request.resolve({
                        client: String(message.client),
                        user: (message.user ?? null),
                        transport: String(message.transport),
                    });
                }
                break;
            }
            case "refresh":
                void this.refreshToken();
                break;
            case "refreshed": {
                const request = this.takePending(message, "refresh");
                if (request)
                    request.resolve(undefined);
                break;
            }
            case "error":
                this.onError(message, sub);
                break;
            default:
                // unsubscribed and anything newer: nothing to do
                break;
        }
    }
    /** The pending request an answer belongs to: by id, or (answers without id) the oldest of its kind and topic. */
    takePending(message, kind) {
        let id;
        if (typeof message.id === "number") {
            const request = this.pending.get(message.id);
            if (request && request.kind === kind)
                id = message.id;
        }
        else if (message.id === undefined) {
            for (const [key, request] of this.pending) {
                if (request.kind === kind && (kind === "refresh" || request.topic === message.topic)) {
                    id = key;
                    break;
                }
            }
        }
        if (id === undefined)
            return undefined;
        const request = this.pending.get(id);
        this.pending.delete(id);
        clearTimeout(request.timer);
        return request;
    }
    onSubscribed(sub, message) {
        const epoch = String(message.epoch);
        const latest = typeof message.offset === "number" ? message.offset : 0;
        const recovered = message.recovered === true;
        const resumed = sub.sentSince;
        sub.live = true;
        let gap = null;
        if (!resumed) {
            // Nothing is replayed: live messages start after the topic's latest offset.
            sub.epoch = epoch;
            sub.offset = latest;
        }
        else if (sub.epoch !== null && sub.epoch !== epoch) {
            // Another numbering: everything the history holds is replayed, all of it new to us.
            sub.epoch = epoch;
            sub.offset = 0;
            gap = { topic: sub.topic, epoch, offset: latest, reason: "epoch" };
        }
        else {
            sub.epoch = epoch;
            if (sub.offset !== null && sub.offset > latest)
                sub.offset = 0; // the server's numbering went back
            if (!recovered)
                gap = { topic: sub.topic, epoch, offset: latest, reason: "not_recovered" };
            // Replayed messages (offsets above ours) follow and advance the position.
        }
        const info = { topic: sub.topic, epoch, offset: latest, recovered, resumed };
        const { onSubscribed, onGap } = sub.options;
        if (onSubscribed)
            this.callback(() => onSubscribed(info));
        if (gap && onGap && sub.active) {
            const g = gap;
            this.callback(() => onGap(g));
        }
    }
    onMessage(sub, message) {
        const offset = message.offset;
        if (typeof offset !== "number")
            return;
        if (sub.offset !== null && offset <= sub.offset)
            return; // delivered already
        sub.offset = offset;
        const { onMessage } = sub.options;
        if (onMessage) {
            const data = message.data;
            this.callback(() => onMessage(data, { topic: sub.topic, offset }));
        }
    }
    onGapEvent(sub, message) {
        const epoch = String(message.epoch);
        const offset = typeof message.offset === "number" ? message.offset : 0;
        const reason = message.reason === "epoch" ? "epoch" : "history";
        sub.epoch = epoch;
        sub.offset = offset;
        const { onGap } = sub.options;
        if (onGap)
            this.callback(() => onGap({ topic: sub.topic, epoch, offset, reason }));
    }
    onError(message, sub) {
        const code = typeof message.code === "string" ? message.code : "error";
        const text = typeof message.message === "string" ? message.message : code;
        const topic = typeof message.topic === "string" ? message.topic : undefined;
        const error = new FdxError(code, text, topic);
        if (typeof message.id === "number" || typeof message.id === "string") {
            const request = this.pending.get(message.id);
            if (request) {
                this.pending.delete(message.id);
                clearTimeout(request.timer);
                if (request.kind === "refresh") {
                    this.emit("error", error);
                    request.resolve(undefined);
                }
                else {
                    request.reject(error);
                }
                return;
            }
            // A refused subscribe (the error names no topic when the topic itself was invalid).
            for (const candidate of this.subs.values()) {
                if (candidate.requestId === message.id) {
                    this.subscribeRefused(candidate, error);
                    return;
                }
            }
            return; // the answer to an unsubscribe, or to a request given up already
        }
        // Errors without id: servers that do not echo ids.
        if (sub && !sub.live && sub.requestId !== null && code !== "rate_limited") {
            this.subscribeRefused(sub, error);
            return;
        }
        this.emit("error", error);
    }
    subscribeRefused(sub, error) {
        if (error.code === "unavailable") {
            // The engine cannot serve right now (Redis down): ask again shortly.
            sub.requestId = null;
            clearTimeout(sub.retryTimer);
            sub.retryTimer = setTimeout(() => {
                sub.retryTimer = null;
                if (sub.active && this.isOpen() && sub.requestId === null)
                    this.sendSubscribe(sub);
            }, Math.max(1000, this.reconnectOptions.minDelay));
            return;
        }
        this.dropSubscription(sub, false);
        const { onError } = sub.options;
        if (onError)
            this.callback(() => onError(error));
        else
            this.emit("error", error);
    }
    async refreshToken() {
        const socket = this.socket;
        if (!this.getToken || !socket)
            return;
        let token;
        try {
            token = await this.getToken();
        }
        catch (error) {
            this.emit("error", asError(error, "getToken failed"));
            return;
        }
        if (this.closedByUser)
            return;
        this.token = token; // used for the next connection in any case
        if (this.socket !== socket || !this.isOpen())
            return;
        const id = this.nextId++;
        await new Promise((resolve) => {
            this.sendRequest(id, "refresh", undefined, { type: "refresh", token, id }, resolve, (error) => {
                this.emit("error", error);
                resolve();
            });
        });
    }
    // -------------------------------------------------------------------------- events
    setState(state) {
        if (state === this.currentState)
            return;
        this.currentState = state;
        this.emit("state", state);
    }
    emit(event, ...args) {
        const list = this.listeners[event];
        if (event === "error" && list.length === 0)
            return;
        for (const listener of list.slice())
            this.callback(() => listener(...args));
    }
    /** Runs an application callback; its exception does not disturb the client. */
    callback(run) {
        try {
            run();
        }
        catch (error) {
            // Reported like an uncaught exception of an event listener, outside the client's code.
            setTimeout(() => {
                throw error;
            }, 0);
        }
    }
    clearTimer(name) {
        if (this[name] !== null) {
            clearTimeout(this[name]);
            this[name] = null;
        }
    }
}
function detach(socket) {
    socket.onopen = null;
    socket.onmessage = null;
    socket.onclose = null;
    // Keep an error handler: `ws` throws on an 'error' event nobody listens to.
    socket.onerror = () => { };
}
function asError(error, fallback) {
    return error instanceof Error ? error : new Error(`${fallback}: ${String(error)}`);
}
