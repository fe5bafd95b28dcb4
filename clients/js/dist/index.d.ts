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
/** The client's connection state, reported by the `state` event. */
export type State = "connecting" | "connected" | "disconnected";
/**
 * The part of the WHATWG WebSocket API the client uses (browsers' WebSocket, Node's `ws`).
 * The handlers' events are typed `any` so that every implementation's own event types fit;
 * the client reads `data` of message events and `code`/`reason` of close events.
 */
export interface WebSocketLike {
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: ((event: any) => void) | null;
    onmessage: ((event: any) => void) | null;
    onclose: ((event: any) => void) | null;
    onerror: ((event: any) => void) | null;
}
/** A WebSocket constructor: `globalThis.WebSocket`, or `WebSocket` of the `ws` package. */
export interface WebSocketConstructor {
    new (url: string): WebSocketLike;
}
/** Reconnect backoff, in milliseconds: see {@link backoffDelay}. */
export interface ReconnectOptions {
    /** Delay before the first reconnect attempt (before jitter). Default 250. */
    minDelay: number;
    /** Upper bound of every delay. Default 10000. */
    maxDelay: number;
    /** Growth per failed attempt. Default 2. */
    factor: number;
    /** Fraction of the delay taken off at random (0: none, 1: anything down to 0). Default 0.5. */
    jitter: number;
}
/** The queue of publishes made while not connected. */
export interface PublishQueueOptions {
    /** Most publishes waiting; one more is rejected at once (`queue_full`). Default 100. */
    max: number;
    /** A waiting publish is rejected (`timeout`) after this many ms. Default 10000. */
    timeoutMs: number;
}
export interface ClientOptions {
    /** Sent as the query parameter `token=` (the hub's `--token-secret`). */
    token?: string;
    /**
     * Gives a fresh token: called when the server asks for one (`{"type":"refresh"}`), before
     * reconnecting after an attempt that failed or a close with 4001 (token expired), and before
     * the first connection when `token` is not given.
     */
    getToken?: () => string | Promise<string>;
    /** The WebSocket implementation. Default `globalThis.WebSocket`. */
    WebSocket?: WebSocketConstructor;
    reconnect?: Partial<ReconnectOptions>;
    publishQueue?: Partial<PublishQueueOptions>;
    /** How long a request (publish, presence, refresh) waits for its answer. Default 10000. */
    requestTimeoutMs?: number;
    /** An attempt that is not open after this many ms is abandoned. Default 10000. */
    connectTimeoutMs?: number;
}
/** Where a message sits in its topic. */
export interface MessageMeta {
    topic: string;
    offset: number;
}
/** Messages were (or may have been) lost: see {@link SubscribeOptions.onGap}. */
export interface GapInfo {
    topic: string;
    /** The topic's epoch now. */
    epoch: string;
    /**
     * `gap` events: messages up to this offset that did not arrive are lost, the next one is
     * higher. `not_recovered`/`epoch` on resubscribing: the topic's latest offset at that moment;
     * what the server's history still holds after the last delivered message follows.
     */
    offset: number;
    /**
     * `history`: a `gap` event (the server missed messages that its history no longer holds).
     * `epoch`: the topic's numbering restarted (a `gap` event, or a resubscription that found
     * another epoch). `not_recovered`: a resubscription with `since` got `recovered:false` (the
     * history no longer reaches back to the last delivered message).
     */
    reason: "history" | "epoch" | "not_recovered";
}
/** The answer to a subscription (also after each reconnect). */
export interface SubscribedInfo {
    topic: string;
    epoch: string;
    offset: number;
    recovered: boolean;
    /** Whether this was a resubscription with `since` (after a reconnect). */
    resumed: boolean;
}
/** One entry of a topic's presence. */
export interface PresenceClient {
    client: string;
    user: string | null;
}
export interface SubscribeOptions {
    /** Each message once, in offset order, across reconnects. */
    onMessage?: (data: unknown, meta: MessageMeta) => void;
    /** Recovery was not complete, or the server sent a `gap` event. */
    onGap?: (info: GapInfo) => void;
    /** Each `subscribed` answer (the first one and those after reconnects). */
    onSubscribed?: (info: SubscribedInfo) => void;
    /** The server refused the subscription (`forbidden`, `invalid_topic`...); it is dropped. */
    onError?: (error: FdxError) => void;
    /** Enter the topic's presence and receive `join`/`leave` events. */
    presence?: boolean;
    onJoin?: (client: PresenceClient) => void;
    onLeave?: (client: PresenceClient) => void;
    /**
     * Start from a known position (for example one saved across page loads): the server replays
     * what its history holds after `since` of `epoch`.
     */
    since?: number;
    epoch?: string;
}
/** The answer to an acknowledged publish. */
export interface PublishResult {
    offset: number;
    epoch: string;
}
/**
 * A refused or failed request. `code` is the server's error code (`forbidden`,
 * `rate_limited`, `unavailable`... see PROTOCOL.md) or one of the client's own:
 * `timeout` (no answer in time), `queue_full` (the publish queue is full),
 * `connection_lost` (the connection dropped after the publish was sent and before its answer:
 * it may or may not have been published, and it is not sent again), `closed` (`close()` was
 * called), `no_websocket` (no WebSocket implementation).
 */
export declare class FdxError extends Error {
    readonly code: string;
    readonly topic: string | undefined;
    constructor(code: string, message: string, topic?: string);
}
/** Details of a closed connection (the `close` event). */
export interface CloseInfo {
    code: number;
    reason: string;
    /** Whether the connection had opened (false: the attempt failed). */
    wasOpen: boolean;
    /** Milliseconds until the next attempt, or null after `close()`. */
    reconnectIn: number | null;
}
export interface ClientEvents {
    state: (state: State) => void;
    close: (info: CloseInfo) => void;
    /** Errors that belong to no request: bad_token on refresh, a failing getToken... */
    error: (error: Error) => void;
}
export declare const DEFAULT_RECONNECT: Readonly<ReconnectOptions>;
/**
 * The delay before reconnect attempt `attempt` (0 for the first attempt after a drop):
 * `base = min(maxDelay, minDelay * factor ** attempt)`, minus up to `jitter * base` at random,
 * so always within `[base * (1 - jitter), base]` and never above `maxDelay`.
 */
export declare function backoffDelay(attempt: number, options?: Partial<ReconnectOptions>, random?: () => number): number;
/** The answer to {@link Client.info}. */
export interface ConnectionInfo {
    /** The connection's id, as in presence. */
    client: string;
    /** The user (the token's `sub`), or null. */
    user: string | null;
    /** What carries the WebSocket: `"http1"` or `"h2"`. */
    transport: string;
}
/** A topic subscription made with {@link Client.subscribe}. */
export interface Subscription {
    readonly topic: string;
    /** The epoch of the last position (null before the first `subscribed`). */
    readonly epoch: string | null;
    /** The offset of the last message delivered, or the position taken from `subscribed`/`gap`. */
    readonly offset: number | null;
    /** Whether the subscription is in place (not unsubscribed, refused, or closed). */
    readonly active: boolean;
    /** Sends `unsubscribe` and stops the callbacks at once. */
    unsubscribe(): void;
}
/**
 * A connection to the push server that reconnects by itself. See the module documentation
 * and clients/js/README.md.
 */
export declare class Client {
    readonly url: string;
    private token;
    private readonly getToken;
    private readonly WebSocketImpl;
    private readonly reconnectOptions;
    private readonly queueOptions;
    private readonly requestTimeoutMs;
    private readonly connectTimeoutMs;
    private socket;
    private currentState;
    /** Whether the first "connecting" was reported (the state starts as "connecting"). */
    private announced;
    private closedByUser;
    private attempt;
    private needToken;
    private reconnectTimer;
    private connectTimer;
    private nextId;
    private readonly subs;
    /** Sent requests waiting for their answer, by id. */
    private readonly pending;
    /** Publishes not sent yet (in order). */
    private readonly queue;
    /** Presence and info requests not sent yet (after a drop they are asked again). */
    private readonly unsentPresence;
    private readonly listeners;
    constructor(url: string, options?: ClientOptions);
    /** The current connection state. */
    get state(): State;
    /** Adds a listener; returns a function that removes it. */
    on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): () => void;
    off<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): void;
    /**
     * Subscribes to `topic` (one subscription per topic and client). Messages are delivered once
     * each, in offset order, also across reconnects (the client resubscribes with `since`).
     */
    subscribe(topic: string, options?: SubscribeOptions): Subscription;
    /**
     * Publishes `data` (any JSON value). Resolves with the server's acknowledgement; rejects with
     * an {@link FdxError}. While not connected the publish waits in a bounded queue; a publish
     * is never sent twice.
     */
    publish(topic: string, data: unknown): Promise<PublishResult>;
    /** Who is in `topic`'s presence (clients that subscribed with `presence: true`). */
    presence(topic: string): Promise<PresenceClient[]>;
    /**
     * What the server knows of this connection: its client id, its user, and the transport that
     * carries it (`"http1"`, or `"h2"` for a WebSocket on an HTTP/2 stream). Asked when connected.
     */
    info(): Promise<ConnectionInfo>;
    /** Closes the connection with 1000 and stops reconnecting; rejects what still waits. */
    close(): void;
    private isOpen;
    private connect;
    private connectUrl;
    /** The connection is gone (closed, or given up): clean up and schedule the next attempt. */
    private abandon;
    private scheduleReconnect;
    private onOpen;
    private rawSend;
    /** Sends a request now if connected (else it waits for the next connection) with a deadline. */
    private sendRequest;
    private sendSubscribe;
    private dropSubscription;
    private handle;
    /** The pending request an answer belongs to: by id, or (answers without id) the oldest of its kind and topic. */
    private takePending;
    private onSubscribed;
    private onMessage;
    private onGapEvent;
    private onError;
    private subscribeRefused;
    private refreshToken;
    private setState;
    private emit;
    /** Runs an application callback; its exception does not disturb the client. */
    private callback;
    private clearTimer;
}
