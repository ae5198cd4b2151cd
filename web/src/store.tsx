// What several pages share: the catalogs, the user's generations (kept live while any is
// open), the draft being composed (so "edit this image" from the gallery lands in it) and
// the notices shown at the top of the page.
import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
} from "react";
import type { ReactNode } from "react";
import { ApiProblem, api, call } from "./api/client";
import type { Generation, Model, Product } from "./api/client";
import { useSession } from "./session";

export type Reference = {
  /** `upl_...` or `gen_.../<index>`, as the API takes it. */
  id: string;
  /** What the person sees: an object URL of their file, or the result's image URL. */
  preview: string;
};

export type Notice = { id: number; tone: "info" | "success" | "error"; body: ReactNode };

const OPEN: ReadonlySet<Generation["status"]> = new Set(["queued", "running"]);
export const isOpen = (g: Generation) => OPEN.has(g.status);

/** Polling backoff for an open generation: 1 s, growing by half, at most 5 s. */
export function nextDelay(previous: number | undefined): number {
  return previous === undefined ? 1000 : Math.min(5000, Math.round(previous * 1.5));
}

type Store = {
  models: Model[] | null;
  products: Product[] | null;
  generations: Generation[] | null;
  nextCursor: string | null;
  loadMore: () => Promise<void>;
  upsert: (generation: Generation) => void;
  remove: (id: string) => void;
  references: Reference[];
  setReferences: (update: (refs: Reference[]) => Reference[]) => void;
  notices: Notice[];
  notify: (tone: Notice["tone"], body: ReactNode) => void;
  dismiss: (id: number) => void;
};

const Context = createContext<Store | null>(null);

export function StoreProvider({ children }: { children: ReactNode }) {
  const { session, refresh, ended } = useSession();
  const userId = session.state === "signedIn" ? session.me.id : null;
  const [models, setModels] = useState<Model[] | null>(null);
  const [products, setProducts] = useState<Product[] | null>(null);
  const [generations, setGenerations] = useState<Generation[] | null>(null);
  const [nextCursor, setNextCursor] = useState<string | null>(null);
  const [references, setReferences] = useState<Reference[]>([]);
  const [notices, setNotices] = useState<Notice[]>([]);
  const noticeId = useRef(0);

  const notify = useCallback((tone: Notice["tone"], body: ReactNode) => {
    noticeId.current += 1;
    const id = noticeId.current;
    setNotices((all) => [...all.slice(-2), { id, tone, body }]);
    if (tone !== "error")
      setTimeout(() => setNotices((all) => all.filter((n) => n.id !== id)), 4000);
  }, []);
  const dismiss = useCallback(
    (id: number) => setNotices((all) => all.filter((n) => n.id !== id)),
    [],
  );

  const failed = useCallback(
    (error: unknown) => {
      if (error instanceof ApiProblem && error.status === 401) ended("expired");
    },
    [ended],
  );

  useEffect(() => {
    call(api.GET("/v1/models"))
      .then((list) => setModels(list.items))
      .catch(() => setModels([]));
    call(api.GET("/v1/products"))
      .then((list) => setProducts(list.items))
      .catch(() => setProducts([]));
  }, []);

  // A new user (or none) starts from nothing: no generation of one is shown to another.
  const [shownFor, setShownFor] = useState(userId);
  if (shownFor !== userId) {
    setShownFor(userId);
    setGenerations(null);
    setNextCursor(null);
    setReferences([]);
    setNotices([]);
  }
  useEffect(() => {
    if (!userId) return;
    let live = true;
    call(api.GET("/v1/generations", { params: { query: { limit: 24 } } }))
      .then((page) => {
        if (!live) return;
        setGenerations(page.items);
        setNextCursor(page.next_cursor);
      })
      .catch(failed);
    return () => {
      live = false;
    };
  }, [userId, failed]);

  const loadMore = useCallback(async () => {
    if (!nextCursor) return;
    try {
      const page = await call(
        api.GET("/v1/generations", { params: { query: { limit: 24, cursor: nextCursor } } }),
      );
      setGenerations((all) => {
        const known = new Set((all ?? []).map((g) => g.id));
        return [...(all ?? []), ...page.items.filter((g) => !known.has(g.id))];
      });
      setNextCursor(page.next_cursor);
    } catch (error) {
      failed(error);
      throw error;
    }
  }, [nextCursor, failed]);

  const upsert = useCallback((generation: Generation) => {
    setGenerations((all) => {
      const list = all ?? [];
      const at = list.findIndex((g) => g.id === generation.id);
      if (at === -1) return [generation, ...list];
      const copy = list.slice();
      copy[at] = generation;
      return copy;
    });
  }, []);
  const remove = useCallback((id: string) => {
    setGenerations((all) => (all ?? []).filter((g) => g.id !== id));
  }, []);

  // Every open generation is polled until it is final; its end may refund credits, so the
  // balance is read again then.
  const openIds = (generations ?? [])
    .filter(isOpen)
    .map((g) => g.id)
    .join(",");
  const delays = useRef(new Map<string, number>());
  useEffect(() => {
    if (!openIds) return;
    const timers: number[] = [];
    let live = true;
    const ids = openIds.split(",");
    // With few open, each waits at the API for its end (`Prefer: wait`) and shows it the
    // moment it comes; with more, short polls, so the browser's six connections to one
    // host are never all held.
    const wait = ids.length <= 2 ? { Prefer: "wait=10" } : undefined;
    for (const id of ids) {
      const poll = async () => {
        try {
          const generation = await call(
            api.GET("/v1/generations/{id}", {
              params: { path: { id }, ...(wait ? { header: wait } : {}) },
            }),
          );
          if (!live) return;
          if (isOpen(generation)) {
            schedule();
            // Running now, perhaps with some images: show what there is.
            upsert(generation);
          } else {
            delays.current.delete(id);
            upsert(generation);
            void refresh().catch(() => undefined);
          }
        } catch (error) {
          if (!live) return;
          if (error instanceof ApiProblem && error.status === 404) remove(id);
          else if (error instanceof ApiProblem && error.status === 401) failed(error);
          else schedule();
        }
      };
      const schedule = () => {
        const delay = nextDelay(delays.current.get(id));
        delays.current.set(id, delay);
        timers.push(window.setTimeout(() => void poll(), delay));
      };
      schedule();
    }
    return () => {
      live = false;
      timers.forEach((t) => clearTimeout(t));
    };
  }, [openIds, upsert, remove, refresh, failed]);

  const value = useMemo<Store>(
    () => ({
      models,
      products,
      generations,
      nextCursor,
      loadMore,
      upsert,
      remove,
      references,
      setReferences,
      notices,
      notify,
      dismiss,
    }),
    [
      models,
      products,
      generations,
      nextCursor,
      loadMore,
      upsert,
      remove,
      references,
      notices,
      notify,
      dismiss,
    ],
  );
  return <Context.Provider value={value}>{children}</Context.Provider>;
}

export function useStore(): Store {
  const value = useContext(Context);
  if (!value) throw new Error("useStore outside StoreProvider");
  return value;
}
