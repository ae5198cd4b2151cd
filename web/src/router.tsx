// A few routes need no router library: the History API and one context.
import { createContext, useCallback, useContext, useEffect, useMemo, useState } from "react";
import type { AnchorHTMLAttributes, MouseEvent, ReactNode } from "react";

export type Route =
  | { page: "create" }
  | { page: "gallery" }
  | { page: "generation"; id: string }
  | { page: "credits" }
  | { page: "buy" }
  | { page: "buySuccess" }
  | { page: "buyCanceled" }
  | { page: "account" }
  | { page: "signIn" }
  | { page: "signedIn" }
  | { page: "notFound" };

export function parseRoute(pathname: string): Route {
  const path = pathname.replace(/\/+$/, "") || "/";
  if (path === "/") return { page: "create" };
  if (path === "/gallery") return { page: "gallery" };
  const generation = /^\/gallery\/(gen_[0-9A-Za-z]+)$/.exec(path);
  if (generation?.[1]) return { page: "generation", id: generation[1] };
  if (path === "/credits") return { page: "credits" };
  if (path === "/buy") return { page: "buy" };
  if (path === "/buy/success") return { page: "buySuccess" };
  if (path === "/buy/canceled") return { page: "buyCanceled" };
  if (path === "/account") return { page: "account" };
  if (path === "/sign-in") return { page: "signIn" };
  if (path === "/signed-in") return { page: "signedIn" };
  return { page: "notFound" };
}

type Nav = { route: Route; url: URL; navigate: (to: string, replace?: boolean) => void };
const Context = createContext<Nav | null>(null);

export function RouterProvider({ children }: { children: ReactNode }) {
  const [url, setUrl] = useState(() => new URL(location.href));
  useEffect(() => {
    const onPop = () => setUrl(new URL(location.href));
    addEventListener("popstate", onPop);
    return () => removeEventListener("popstate", onPop);
  }, []);
  const navigate = useCallback((to: string, replace = false) => {
    if (replace) history.replaceState(null, "", to);
    else history.pushState(null, "", to);
    setUrl(new URL(location.href));
    if (!replace) scrollTo(0, 0);
  }, []);
  const value = useMemo(
    () => ({ route: parseRoute(url.pathname), url, navigate }),
    [url, navigate],
  );
  return <Context.Provider value={value}>{children}</Context.Provider>;
}

export function useRouter(): Nav {
  const value = useContext(Context);
  if (!value) throw new Error("useRouter outside RouterProvider");
  return value;
}

/** An `<a>` that navigates in the app (new tabs and modified clicks still work). */
export function Link({
  href,
  onClick,
  ...rest
}: AnchorHTMLAttributes<HTMLAnchorElement> & { href: string }) {
  const { navigate } = useRouter();
  const handle = (event: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(event);
    if (
      event.defaultPrevented ||
      event.button !== 0 ||
      event.metaKey ||
      event.ctrlKey ||
      event.shiftKey ||
      event.altKey
    )
      return;
    event.preventDefault();
    navigate(href);
  };
  return <a href={href} onClick={handle} {...rest} />;
}
