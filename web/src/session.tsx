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
import { ApiProblem, api, call, hasToken, setToken } from "./api/client";
import type { Me } from "./api/client";

// Only a hint that a cookie session may exist (the cookie itself is HttpOnly): without
// it a visitor who never signed in is not greeted by a 401 on every load.
const COOKIE_HINT = "nb.cookie-session";

function hint(on: boolean | null): boolean {
  try {
    if (on === true) localStorage.setItem(COOKIE_HINT, "1");
    else if (on === false) localStorage.removeItem(COOKIE_HINT);
    return localStorage.getItem(COOKIE_HINT) === "1";
  } catch {
    return false;
  }
}

export type Session =
  | { state: "loading" }
  | { state: "signedOut"; reason?: "expired" | "signedOut" | "deleted" }
  | { state: "signedIn"; me: Me };

type SessionApi = {
  session: Session;
  me: Me | null;
  /** After a dev or One Tap sign-in: the token stays in memory only. */
  signedInWithToken: (token: string, me: Me) => void;
  /** After coming back from Google or Facebook with the cookie set. */
  signedInWithCookie: () => Promise<void>;
  /** Re-reads the balance and profile. */
  refresh: () => Promise<void>;
  signOut: () => Promise<void>;
  /** The session is gone (a 401 anywhere, or the account deleted). */
  ended: (reason: "expired" | "deleted") => void;
};

const Context = createContext<SessionApi | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const [session, setSession] = useState<Session>(() =>
    hint(null) ? { state: "loading" } : { state: "signedOut" },
  );

  const ended = useCallback((reason: "expired" | "deleted") => {
    setToken(null);
    hint(false);
    setSession({ state: "signedOut", reason });
  }, []);

  const refresh = useCallback(async () => {
    try {
      const me = await call(api.GET("/v1/me"));
      setSession({ state: "signedIn", me });
    } catch (error) {
      if (error instanceof ApiProblem && error.status === 401) ended("expired");
      else throw error;
    }
  }, [ended]);

  // The first load reads the cookie session, where one may exist.
  const cookieHint = useRef(session.state === "loading");
  useEffect(() => {
    if (!cookieHint.current) return;
    cookieHint.current = false;
    call(api.GET("/v1/me"))
      .then((me) => setSession({ state: "signedIn", me }))
      .catch((error: unknown) => {
        if (error instanceof ApiProblem && error.status === 401) hint(false);
        setSession({ state: "signedOut" });
      });
  }, []);

  const value = useMemo<SessionApi>(
    () => ({
      session,
      me: session.state === "signedIn" ? session.me : null,
      signedInWithToken: (token, me) => {
        setToken(token);
        setSession({ state: "signedIn", me });
      },
      signedInWithCookie: async () => {
        hint(true);
        await refresh();
      },
      refresh,
      signOut: async () => {
        try {
          await call(api.POST("/auth/logout"));
        } catch (error) {
          // Already signed out elsewhere: the outcome is the same.
          if (!(error instanceof ApiProblem && error.status === 401)) throw error;
        }
        setToken(null);
        hint(false);
        setSession({ state: "signedOut", reason: "signedOut" });
      },
      ended,
    }),
    [session, refresh, ended],
  );
  return <Context.Provider value={value}>{children}</Context.Provider>;
}

export function useSession(): SessionApi {
  const value = useContext(Context);
  if (!value) throw new Error("useSession outside SessionProvider");
  return value;
}

/** Whether a request can be authenticated at all (a token, or maybe a cookie). */
export function mayBeSignedIn(): boolean {
  return hasToken() || hint(null);
}
