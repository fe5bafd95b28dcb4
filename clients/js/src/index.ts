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

// Only ES2020 is assumed (tsconfig: lib ES2020, no ambient types), so the few host functions
// used are declared here, module-local: browsers and Node both provide them.
declare function setTimeout(callback: () => void, ms: number): unknown;
declare function clearTimeout(handle: unknown): void;

// ------------------------------------------------------------------------------- types

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
export class FdxError extends Error {
  readonly code: string;
  readonly topic: string | undefined;
  constructor(code: string, message: string, topic?: string) {
    super(message);
    this.name = "FdxError";
    this.code = code;
    this.topic = topic;
  }
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

// ----------------------------------------------------------------------------- backoff

export const DEFAULT_RECONNECT: Readonly<ReconnectOptions> = Object.freeze({
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
export function backoffDelay(
  attempt: number,
  options: Partial<ReconnectOptions> = {},
  random: () => number = Math.random,
): number {
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

/** The answer to {@link Client.info}. */
export interface ConnectionInfo {
  /** The connection's id, as in presence. */
  client: string;
  /** The user (the token's `sub`), or null. */
  user: string | null;
  /** What carries the WebSocket: `"http1"` or `"h2"`. */
  transport: string;
}

interface Pending {
  kind: "publish" | "presence" | "refresh" | "info";
  topic: string | undefined;
  message: Record<string, unknown>;
  resolve: (value: any) => void;
  reject: (error: FdxError) => void;
  timer: unknown;
}

interface QueuedPublish {
  id: number;
  message: Record<string, unknown>;
  resolve: (value: PublishResult) => void;
  reject: (error: FdxError) => void;
  timer: unknown;
}

interface SubState {
  topic: string;
  options: SubscribeOptions;
  active: boolean;
  /** Id of the subscribe request on the current connection (null: not sent on it). */
  requestId: number | null;
  /** Whether `subscribed` arrived on the current connection (messages before it are stale). */
  live: boolean;
  /** Whether the request on this connection carried `since`. */
  sentSince: boolean;
  epoch: string | null;
  /** Highest offset delivered (or position taken from `subscribed`/`gap`) in `epoch`. */
  offset: number | null;
  retryTimer: unknown;
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

type Listener<K extends keyof ClientEvents> = ClientEvents[K];

/**
 * A connection to the push server that reconnects by itself. See the module documentation
 * and clients/js/README.md.
 */
export class Client {
  readonly url: string;
  private token: string | undefined;
  private readonly getToken: (() => string | Promise<string>) | undefined;
  private readonly WebSocketImpl: WebSocketConstructor | undefined;
  private readonly reconnectOptions: ReconnectOptions;
  private readonly queueOptions: PublishQueueOptions;
  private readonly requestTimeoutMs: number;
  private readonly connectTimeoutMs: number;

  private socket: WebSocketLike | null = null;
  private currentState: State = "connecting";
  /** Whether the first "connecting" was reported (the state starts as "connecting"). */
  private announced = false;
  private closedByUser = false;
  private attempt = 0;
  private needToken: boolean;
  private reconnectTimer: unknown = null;
  private connectTimer: unknown = null;
  private nextId = 1;
  private readonly subs = new Map<string, SubState>();
  /** Sent requests waiting for their answer, by id. */
  private readonly pending = new Map<number, Pending>();
  /** Publishes not sent yet (in order). */
  private readonly queue: QueuedPublish[] = [];
  /** Presence and info requests not sent yet (after a drop they are asked again). */
  private readonly unsentPresence: number[] = [];
  private readonly listeners: { [K in keyof ClientEvents]: Array<Listener<K>> } = {
    state: [],
    close: [],
    error: [],
  };

  constructor(url: string, options: ClientOptions = {}) {
    this.url = url;
    this.token = options.token;
    this.getToken = options.getToken;
    this.WebSocketImpl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    this.reconnectOptions = { ...DEFAULT_RECONNECT, ...options.reconnect };
    this.queueOptions = { max: 100, timeoutMs: 10000, ...options.publishQueue };
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
    this.needToken = this.token === undefined && this.getToken !== undefined;
    // Connect at once, but after the caller could add its listeners (it sees "connecting").
    void Promise.resolve().then(() => this.connect());
  }

  /** The current connection state. */
  get state(): State {
    return this.currentState;
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): () => void {
    (this.listeners[event] as Array<ClientEvents[K]>).push(listener);
    return () => this.off(event, listener);
  }

  off<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): void {
    const list = this.listeners[event] as Array<ClientEvents[K]>;
    const i = list.indexOf(listener);
    if (i >= 0) list.splice(i, 1);
  }

  /**
   * Subscribes to `topic` (one subscription per topic and client). Messages are delivered once
   * each, in offset order, also across reconnects (the client resubscribes with `since`).
   */
  subscribe(topic: string, options: SubscribeOptions = {}): Subscription {
    if (this.closedByUser) throw new FdxError("closed", "the client is closed", topic);
    if (this.subs.has(topic)) throw new Error(`already subscribed to ${JSON.stringify(topic)}`);
    const state: SubState = {
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
    if (this.isOpen()) this.sendSubscribe(state);
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
  publish(topic: string, data: unknown): Promise<PublishResult> {
    return new Promise<PublishResult>((resolve, reject) => {
      if (this.closedByUser) return reject(new FdxError("closed", "the client is closed", topic));
      const id = this.nextId++;
      const message = { type: "publish", topic, data: data === undefined ? null : data, id };
      if (this.isOpen()) {
        this.sendRequest(id, "publish", topic, message, resolve, reject);
        return;
      }
      if (this.queue.length >= this.queueOptions.max) {
        return reject(
          new FdxError("queue_full", `not connected and ${this.queue.length} publishes wait already`, topic),
        );
      }
      const entry: QueuedPublish = { id, message, resolve, reject, timer: null };
      entry.timer = setTimeout(() => {
        const i = this.queue.indexOf(entry);
        if (i >= 0) this.queue.splice(i, 1);
        reject(new FdxError("timeout", `not connected within ${this.queueOptions.timeoutMs} ms`, topic));
      }, this.queueOptions.timeoutMs);
      this.queue.push(entry);
    });
  }

  /** Who is in `topic`'s presence (clients that subscribed with `presence: true`). */
  presence(topic: string): Promise<PresenceClient[]> {
    return new Promise<PresenceClient[]>((resolve, reject) => {
      if (this.closedByUser) return reject(new FdxError("closed", "the client is closed", topic));
      const id = this.nextId++;
      const message = { type: "presence", topic, id };
      this.sendRequest(id, "presence", topic, message, resolve, reject);
    });
  }

  /**
   * What the server knows of this connection: its client id, its user, and the transport that
   * carries it (`"http1"`, or `"h2"` for a WebSocket on an HTTP/2 stream). Asked when connected.
   */
  info(): Promise<ConnectionInfo> {
    return new Promise<ConnectionInfo>((resolve, reject) => {
      if (this.closedByUser) return reject(new FdxError("closed", "the client is closed"));
      const id = this.nextId++;
      const message = { type: "info", id };
      this.sendRequest(id, "info", undefined, message, resolve, reject);
    });
  }

  /** Closes the connection with 1000 and stops reconnecting; rejects what still waits. */
  close(): void {
    if (this.closedByUser) return;
    this.closedByUser = true;
    this.clearTimer("reconnectTimer");
    this.clearTimer("connectTimer");
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      detach(socket);
      try {
        socket.close(1000, "client closed");
      } catch {
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
    if (socket) this.emit("close", { code: 1000, reason: "client closed", wasOpen: true, reconnectIn: null });
  }

  // ---------------------------------------------------------------------- connection

  private isOpen(): boolean {
    return this.socket !== null && this.currentState === "connected" && this.socket.readyState === OPEN;
  }

  private async connect(): Promise<void> {
    this.reconnectTimer = null;
    if (this.closedByUser || this.socket !== null) return;
    if (!this.announced) {
      this.announced = true;
      this.emit("state", "connecting");
    } else {
      this.setState("connecting");
    }
    if (this.needToken && this.getToken) {
      try {
        this.token = await this.getToken();
        this.needToken = false;
      } catch (error) {
        if (this.closedByUser) return;
        this.emit("error", asError(error, "getToken failed"));
        this.scheduleReconnect(0, "getToken failed", false);
        return;
      }
      if (this.closedByUser) return;
    }
    const Impl = this.WebSocketImpl;
    if (!Impl) {
      this.emit("error", new FdxError("no_websocket", "no WebSocket implementation: pass options.WebSocket"));
      this.closedByUser = true;
      this.setState("disconnected");
      return;
    }
    let socket: WebSocketLike;
    try {
      socket = new Impl(this.connectUrl());
    } catch (error) {
      this.emit("error", asError(error, "cannot create the WebSocket"));
      this.scheduleReconnect(1006, "cannot create the WebSocket", false);
      return;
    }
    this.socket = socket;
    let opened = false;
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null;
      if (this.socket !== socket || opened) return;
      this.abandon(socket, 1006, `not open after ${this.connectTimeoutMs} ms`, false);
    }, this.connectTimeoutMs);
    socket.onopen = () => {
      if (this.socket !== socket) return;
      opened = true;
      this.clearTimer("connectTimer");
      this.attempt = 0;
      this.setState("connected");
      this.onOpen();
    };
    socket.onmessage = (event: { data: unknown }) => {
      if (this.socket !== socket) return;
      if (typeof event.data !== "string") return;
      let message: unknown;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && typeof message === "object" && !Array.isArray(message)) {
        this.handle(message as Record<string, unknown>);
      }
    };
    socket.onclose = (event: { code?: number; reason?: string }) => {
      if (this.socket !== socket) return;
      this.abandon(socket, event.code ?? 1006, event.reason ?? "", opened);
    };
    socket.onerror = () => {
      // A close event follows.
    };
  }

  private connectUrl(): string {
    if (this.token === undefined) return this.url;
    const hash = this.url.indexOf("#");
    const base = hash >= 0 ? this.url.slice(0, hash) : this.url;
    const separator = base.includes("?") ? "&" : "?";
    return base + separator + "token=" + encodeURIComponent(this.token);
  }

  /** The connection is gone (closed, or given up): clean up and schedule the next attempt. */
  private abandon(socket: WebSocketLike, code: number, reason: string, wasOpen: boolean): void {
    this.socket = null;
    this.clearTimer("connectTimer");
    detach(socket);
    if (socket.readyState <= OPEN) {
      try {
        socket.close();
      } catch {
        // closing already
      }
    }
    // Sent publishes without an answer are never sent again: they may have been published.
    for (const [id, request] of this.pending) {
      if (request.kind === "publish") {
        this.pending.delete(id);
        clearTimeout(request.timer);
        request.reject(
          new FdxError(
            "connection_lost",
            "the connection dropped before the publish was acknowledged (it may have been published)",
            request.topic,
          ),
        );
      } else if (request.kind === "refresh") {
        this.pending.delete(id);
        clearTimeout(request.timer);
        request.resolve(undefined);
      } else if (!this.unsentPresence.includes(id)) {
        this.unsentPresence.push(id); // asked again on the next connection, same deadline
      }
    }
    for (const sub of this.subs.values()) {
      sub.requestId = null;
      sub.live = false;
      clearTimeout(sub.retryTimer);
      sub.retryTimer = null;
    }
    if (code === 4001) this.needToken = this.getToken !== undefined; // token expired
    this.scheduleReconnect(code, reason, wasOpen);
  }

  private scheduleReconnect(code: number, reason: string, wasOpen: boolean): void {
    if (this.closedByUser) return;
    if (!wasOpen) this.needToken = this.getToken !== undefined;
    const delay = backoffDelay(this.attempt, this.reconnectOptions);
    this.attempt += 1;
    this.setState("disconnected");
    this.reconnectTimer = setTimeout(() => void this.connect(), delay);
    this.emit("close", { code, reason, wasOpen, reconnectIn: delay });
  }

  private onOpen(): void {
    for (const sub of this.subs.values()) this.sendSubscribe(sub);
    for (const id of this.unsentPresence.splice(0)) {
      const request = this.pending.get(id);
      if (request) this.rawSend(request.message);
    }
    for (const entry of this.queue.splice(0)) {
      clearTimeout(entry.timer);
      // If the socket fails meanwhile, sendRequest puts it back into the queue.
      const topic = entry.message.topic as string;
      this.sendRequest(entry.id, "publish", topic, entry.message, entry.resolve, entry.reject);
    }
  }

  private rawSend(message: Record<string, unknown>): boolean {
    const socket = this.socket;
    if (!socket || socket.readyState !== OPEN) return false;
    try {
      socket.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  /** Sends a request now if connected (else it waits for the next connection) with a deadline. */
  private sendRequest(
    id: number,
    kind: Pending["kind"],
    topic: string | undefined,
    message: Record<string, unknown>,
    resolve: (value: any) => void,
    reject: (error: FdxError) => void,
  ): void {
    const request: Pending = { kind, topic, message, resolve, reject, timer: null };
    request.timer = setTimeout(() => {
      this.pending.delete(id);
      const i = this.unsentPresence.indexOf(id);
      if (i >= 0) this.unsentPresence.splice(i, 1);
      reject(new FdxError("timeout", `no answer to ${kind} within ${this.requestTimeoutMs} ms`, topic));
    }, this.requestTimeoutMs);
    this.pending.set(id, request);
    const sent = this.isOpen() && this.rawSend(message);
    if (!sent) {
      if (kind === "publish") {
        // Not sent: wait in the queue like a publish made while disconnected.
        this.pending.delete(id);
        clearTimeout(request.timer);
        const entry: QueuedPublish = { id, message, resolve, reject, timer: null };
        entry.timer = setTimeout(() => {
          const i = this.queue.indexOf(entry);
          if (i >= 0) this.queue.splice(i, 1);
          reject(new FdxError("timeout", `not connected within ${this.queueOptions.timeoutMs} ms`, topic));
        }, this.queueOptions.timeoutMs);
        this.queue.push(entry);
      } else if (kind === "presence" || kind === "info") {
        this.unsentPresence.push(id); // asked when connected
      } else {
        this.pending.delete(id);
        clearTimeout(request.timer);
        resolve(undefined);
      }
    }
  }

  private sendSubscribe(sub: SubState): void {
    const id = this.nextId++;
    const message: Record<string, unknown> = { type: "subscribe", topic: sub.topic, id };
    sub.sentSince = sub.offset !== null;
    if (sub.offset !== null) {
      message.since = sub.offset;
      if (sub.epoch !== null) message.epoch = sub.epoch;
    }
    if (sub.options.presence) message.presence = true;
    sub.requestId = id;
    sub.live = false;
    this.rawSend(message);
  }

  private dropSubscription(sub: SubState, tell: boolean): void {
    if (!sub.active) return;
    sub.active = false;
    clearTimeout(sub.retryTimer);
    if (this.subs.get(sub.topic) === sub) this.subs.delete(sub.topic);
    if (tell && sub.requestId !== null) {
      this.rawSend({ type: "unsubscribe", topic: sub.topic, id: this.nextId++ });
    }
    sub.requestId = null;
  }

  // ------------------------------------------------------------------------ messages

  private handle(message: Record<string, unknown>): void {
    const topic = typeof message.topic === "string" ? message.topic : undefined;
    const sub = topic !== undefined ? this.subs.get(topic) : undefined;
    switch (message.type) {
      case "message":
        if (sub && sub.live) this.onMessage(sub, message);
        break;
      case "subscribed":
        if (sub && (message.id === undefined || message.id === sub.requestId)) this.onSubscribed(sub, message);
        break;
      case "gap":
        if (sub && sub.live) this.onGapEvent(sub, message);
        break;
      case "join":
      case "leave":
        if (sub && sub.live) {
          const entry = { client: String(message.client), user: (message.user ?? null) as string | null };
          const callback = message.type === "join" ? sub.options.onJoin : sub.options.onLeave;
          if (callback) this.callback(() => callback(entry));
        }
        break;
      case "published": {
        const request = this.takePending(message, "publish");
        if (request) request.resolve({ offset: message.offset as number, epoch: message.epoch as string });
        break;
      }
      case "presence": {
        const request = this.takePending(message, "presence");
        if (request) request.resolve(Array.isArray(message.clients) ? message.clients : []);
        break;
      }
      case "info": {
        const request = this.takePending(message, "info");
        if (request) {
          request.resolve({
            client: String(message.client),
            user: (message.user ?? null) as string | null,
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
        if (request) request.resolve(undefined);
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
  private takePending(message: Record<string, unknown>, kind: Pending["kind"]): Pending | undefined {
    let id: number | undefined;
    if (typeof message.id === "number") {
      const request = this.pending.get(message.id);
      if (request && request.kind === kind) id = message.id;
    } else if (message.id === undefined) {
      for (const [key, request] of this.pending) {
        if (request.kind === kind && (kind === "refresh" || request.topic === message.topic)) {
          id = key;
          break;
        }
      }
    }
    if (id === undefined) return undefined;
    const request = this.pending.get(id)!;
    this.pending.delete(id);
    clearTimeout(request.timer);
    return request;
  }

  private onSubscribed(sub: SubState, message: Record<string, unknown>): void {
    const epoch = String(message.epoch);
    const latest = typeof message.offset === "number" ? message.offset : 0;
    const recovered = message.recovered === true;
    const resumed = sub.sentSince;
    sub.live = true;
    let gap: GapInfo | null = null;
    if (!resumed) {
      // Nothing is replayed: live messages start after the topic's latest offset.
      sub.epoch = epoch;
      sub.offset = latest;
    } else if (sub.epoch !== null && sub.epoch !== epoch) {
      // Another numbering: everything the history holds is replayed, all of it new to us.
      sub.epoch = epoch;
      sub.offset = 0;
      gap = { topic: sub.topic, epoch, offset: latest, reason: "epoch" };
    } else {
      sub.epoch = epoch;
      if (sub.offset !== null && sub.offset > latest) sub.offset = 0; // the server's numbering went back
      if (!recovered) gap = { topic: sub.topic, epoch, offset: latest, reason: "not_recovered" };
      // Replayed messages (offsets above ours) follow and advance the position.
    }
    const info: SubscribedInfo = { topic: sub.topic, epoch, offset: latest, recovered, resumed };
    const { onSubscribed, onGap } = sub.options;
    if (onSubscribed) this.callback(() => onSubscribed(info));
    if (gap && onGap && sub.active) {
      const g = gap;
      this.callback(() => onGap(g));
    }
  }

  private onMessage(sub: SubState, message: Record<string, unknown>): void {
    const offset = message.offset;
    if (typeof offset !== "number") return;
    if (sub.offset !== null && offset <= sub.offset) return; // delivered already
    sub.offset = offset;
    const { onMessage } = sub.options;
    if (onMessage) {
      const data = message.data;
      this.callback(() => onMessage(data, { topic: sub.topic, offset }));
    }
  }

  private onGapEvent(sub: SubState, message: Record<string, unknown>): void {
    const epoch = String(message.epoch);
    const offset = typeof message.offset === "number" ? message.offset : 0;
    const reason = message.reason === "epoch" ? "epoch" : "history";
    sub.epoch = epoch;
    sub.offset = offset;
    const { onGap } = sub.options;
    if (onGap) this.callback(() => onGap({ topic: sub.topic, epoch, offset, reason }));
  }

  private onError(message: Record<string, unknown>, sub: SubState | undefined): void {
    const code = typeof message.code === "string" ? message.code : "error";
    const text = typeof message.message === "string" ? message.message : code;
    const topic = typeof message.topic === "string" ? message.topic : undefined;
    const error = new FdxError(code, text, topic);
    if (typeof message.id === "number" || typeof message.id === "string") {
      const request = this.pending.get(message.id as number);
      if (request) {
        this.pending.delete(message.id as number);
        clearTimeout(request.timer);
        if (request.kind === "refresh") {
          this.emit("error", error);
          request.resolve(undefined);
        } else {
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

  private subscribeRefused(sub: SubState, error: FdxError): void {
    if (error.code === "unavailable") {
      // The engine cannot serve right now (Redis down): ask again shortly.
      sub.requestId = null;
      clearTimeout(sub.retryTimer);
      sub.retryTimer = setTimeout(() => {
        sub.retryTimer = null;
        if (sub.active && this.isOpen() && sub.requestId === null) this.sendSubscribe(sub);
      }, Math.max(1000, this.reconnectOptions.minDelay));
      return;
    }
    this.dropSubscription(sub, false);
    const { onError } = sub.options;
    if (onError) this.callback(() => onError(error));
    else this.emit("error", error);
  }

  private async refreshToken(): Promise<void> {
    const socket = this.socket;
    if (!this.getToken || !socket) return;
    let token: string;
    try {
      token = await this.getToken();
    } catch (error) {
      this.emit("error", asError(error, "getToken failed"));
      return;
    }
    if (this.closedByUser) return;
    this.token = token; // used for the next connection in any case
    if (this.socket !== socket || !this.isOpen()) return;
    const id = this.nextId++;
    await new Promise<void>((resolve) => {
      this.sendRequest(id, "refresh", undefined, { type: "refresh", token, id }, resolve, (error) => {
        this.emit("error", error);
        resolve();
      });
    });
  }

  // -------------------------------------------------------------------------- events

  private setState(state: State): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.emit("state", state);
  }

  private emit<K extends keyof ClientEvents>(event: K, ...args: Parameters<ClientEvents[K]>): void {
    const list = this.listeners[event] as Array<(...a: Parameters<ClientEvents[K]>) => void>;
    if (event === "error" && list.length === 0) return;
    for (const listener of list.slice()) this.callback(() => listener(...args));
  }

  /** Runs an application callback; its exception does not disturb the client. */
  private callback(run: () => void): void {
    try {
      run();
    } catch (error) {
      // Reported like an uncaught exception of an event listener, outside the client's code.
      setTimeout(() => {
        throw error;
      }, 0);
    }
  }

  private clearTimer(name: "reconnectTimer" | "connectTimer"): void {
    if (this[name] !== null) {
      clearTimeout(this[name]);
      this[name] = null;
    }
  }
}

function detach(socket: WebSocketLike): void {
  socket.onopen = null;
  socket.onmessage = null;
  socket.onclose = null;
  // Keep an error handler: `ws` throws on an 'error' event nobody listens to.
  socket.onerror = () => {};
}

function asError(error: unknown, fallback: string): Error {
  return error instanceof Error ? error : new Error(`${fallback}: ${String(error)}`);
}
