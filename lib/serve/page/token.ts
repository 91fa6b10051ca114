/**
 * The token: taken from the URL the server printed (`/?token=…`) and removed from the address bar at
 * once (history.replaceState: it stays out of the history, bookmarks and screenshots), kept in memory
 * and in sessionStorage (this tab only, gone when it closes) so a reload keeps working. No cookie: a
 * cookie would be sent by every page that links here, which is what the token protects against.
 */

const KEY = 'model-stock-serve-token';
const PARAM = 'token';

export function takeToken(): string | undefined {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get(PARAM);
  if (fromUrl !== null) {
    url.searchParams.delete(PARAM);
    window.history.replaceState(window.history.state, '', `${url.pathname}${url.search}${url.hash}`);
    if (fromUrl !== '') {
      rememberToken(fromUrl);
      return fromUrl;
    }
  }
  try {
    return window.sessionStorage.getItem(KEY) ?? undefined;
  } catch {
    return undefined; // storage disabled: the token lives in memory only
  }
}

export function rememberToken(token: string | undefined): void {
  try {
    if (token === undefined) window.sessionStorage.removeItem(KEY);
    else window.sessionStorage.setItem(KEY, token);
  } catch {
    // storage disabled: memory only
  }
}
