/** account: sign-up, login (rate-limited per account and per address), logout, sessions, log out everywhere. */
import type { ShopConfig } from '../config.js'
import { newUserId } from '../data/ids.js'
import { createLoginLimiter } from '../platform/resilience.js'
import {
  followShardPrimary,
  openShopRouter,
  type Row,
  routerHealth,
  withCausalToken,
} from '../platform/sharding.js'
import { onShardPrimary } from '../platform/shardPrimary.js'
import { html } from '../web/html.js'
import { HttpError } from '../web/http.js'
import { hashPassword, verifyPassword } from '../web/password.js'
import { sameOriginPath } from '../web/redirect.js'
import {
  clientAddress,
  createServiceEnv,
  csrfInput,
  currentUser,
  field,
  go,
  json,
  page,
  requireUser,
  session,
  webRouter,
} from './common.js'

export async function startAccount(config: ShopConfig, instance: string, port: number) {
  const env = createServiceEnv(config, instance)
  const routing = await openShopRouter(config)
  const router = routing.router
  const loginLimits = createLoginLimiter(env.redis, `${config.ns}:login:`)
  env.closers.push(
    () => routing.close(),
    // the supervisor's shard-primary switch: this process's router follows the new primary
    onShardPrimary((shard, primary) => followShardPrimary(router, shard, primary)),
    () => loginLimits.close(),
  )

  const app = webRouter(env, {
    stats: async () => ({
      router: routerHealth(routing),
      loginLimits: loginLimits.stats(),
    }),
  })

  const authForm = (
    ctx: Parameters<typeof page>[0],
    kind: 'login' | 'signup',
    error?: string,
    email = '',
  ) => html`
<h1>${kind === 'login' ? 'Log in' : 'Create an account'}</h1>
${error ? html`<p class="error" role="alert">${error}</p>` : ''}
<form method="post" action="/${kind}${kind === 'login' && ctx.url.searchParams.get('next') ? html`?next=${encodeURIComponent(sameOriginPath(ctx.url.searchParams.get('next')))}` : ''}" class="card">
${csrfInput(ctx)}
${kind === 'signup' ? html`<p><label>Name <input name="name" required maxlength="100" autocomplete="name"></label></p>` : ''}
<p><label>Email <input name="email" type="email" required maxlength="254" value="${email}" autocomplete="email"></label></p>
<p><label>Password <input name="password" type="password" required minlength="8" autocomplete="${kind === 'login' ? 'current-password' : 'new-password'}"></label></p>
<p><button>${kind === 'login' ? 'Log in' : 'Sign up'}</button></p></form>`

  app.get('/signup', (ctx) => page(ctx, env, 'Sign up', authForm(ctx, 'signup')))
  app.post('/signup', async (ctx) => {
    const email = (await field(ctx, 'email')).trim().toLowerCase()
    const name = (await field(ctx, 'name')).trim().slice(0, 100)
    const password = await field(ctx, 'password')
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email) || email.length > 254) {
      return page(
        ctx,
        env,
        'Sign up',
        authForm(ctx, 'signup', 'Please enter a valid email address.'),
        { status: 400 },
      )
    }
    if (password.length < 8 || password.length > 200) {
      return page(
        ctx,
        env,
        'Sign up',
        authForm(ctx, 'signup', 'Passwords need at least 8 characters.', email),
        { status: 400 },
      )
    }
    const id = newUserId()
    const hash = await hashPassword(password)
    // The email index row claims the address first (its primary key makes it unique everywhere).
    try {
      await router.query(email, 'INSERT INTO email_index (email, user_id) VALUES (?, ?)', [
        email,
        id,
      ])
    } catch (err) {
      if ((err as { code?: string }).code === 'ER_DUP_ENTRY') {
        return page(
          ctx,
          env,
          'Sign up',
          authForm(ctx, 'signup', 'That email is already registered.', email),
          { status: 409 },
        )
      }
      throw err
    }
    const { token } = await withCausalToken(router, '', () =>
      router.query(id, 'INSERT INTO users (id, email, name, password_hash) VALUES (?, ?, ?, ?)', [
        id,
        email,
        name || email,
        hash,
      ]),
    )
    const s = session(ctx)
    await s.regenerate({ userId: id })
    s.data.name = name || email
    s.data.email = email
    s.data.isAdmin = false
    s.data.ryw = token
    await go(ctx, '/', `Welcome, ${name || email}!`)
  })

  app.get('/login', (ctx) => page(ctx, env, 'Log in', authForm(ctx, 'login')))
  app.post('/login', async (ctx) => {
    const email = (await field(ctx, 'email')).trim().toLowerCase()
    const password = await field(ctx, 'password')
    const wait = await loginLimits.hit(email, clientAddress(ctx))
    if (wait > 0) {
      ctx.res.setHeader('retry-after', String(Math.ceil(wait / 1000)))
      return page(
        ctx,
        env,
        'Log in',
        authForm(
          ctx,
          'login',
          `Too many attempts. Try again in ${Math.ceil(wait / 1000)} s.`,
          email,
        ),
        {
          status: 429,
        },
      )
    }
    const idx = await router.query<Row[]>(
      email,
      'SELECT user_id FROM email_index WHERE email = ?',
      [email],
    )
    const userId = idx[0] ? String(idx[0].user_id) : undefined
    const user = userId
      ? (
          await router.query<Row[]>(
            userId,
            'SELECT id, name, email, password_hash, is_admin FROM users WHERE id = ?',
            [userId],
          )
        )[0]
      : undefined
    // Verify against a dummy hash for unknown emails too, so timing does not reveal accounts.
    const ok = await verifyPassword(password, user ? String(user.password_hash) : DUMMY_HASH)
    if (!user || !ok) {
      return page(ctx, env, 'Log in', authForm(ctx, 'login', 'Wrong email or password.', email), {
        status: 401,
      })
    }
    await loginLimits.succeeded(email)
    const s = session(ctx)
    await s.regenerate({ userId: String(user.id) })
    s.data.name = String(user.name)
    s.data.email = String(user.email)
    s.data.isAdmin = Number(user.is_admin) === 1
    s.data.ryw = ''
    // Only a path of this shop: `/%5Cevil.example` or `/%09/evil.example` would leave it.
    await go(
      ctx,
      sameOriginPath(ctx.url.searchParams.get('next')),
      `Logged in as ${String(user.email)}`,
    )
  })

  app.post('/logout', async (ctx) => {
    await session(ctx).destroy()
    await go(ctx, '/')
  })
  app.post('/logout-everywhere', async (ctx) => {
    requireUser(ctx)
    await session(ctx).destroy({ everywhere: true })
    await go(ctx, '/login')
  })

  app.get('/account', async (ctx) => {
    const user = requireUser(ctx)
    const s = session(ctx)
    const list = await env.sessions.listForUser(user.id)
    await page(
      ctx,
      env,
      'Your account',
      html`<h1>Your account</h1>
<p>${user.name} &lt;${user.email}&gt; · user id <code>${user.id}</code> · shard <code data-user-shard>${router.shardFor(user.id)}</code></p>
<h2>Sessions</h2>
<table><thead><tr><th>session</th><th>started</th><th>last seen</th><th></th></tr></thead><tbody>
${list.map(
  (x) =>
    html`<tr data-session-row><td><code>${x.idHash.slice(0, 12)}</code></td><td>${new Date(x.createdAt).toISOString()}</td><td>${new Date(x.lastSeenAt).toISOString()}</td><td>${x.id === s.id ? 'this one' : ''}</td></tr>`,
)}
</tbody></table>
<form method="post" action="/logout-everywhere">${csrfInput(ctx)}<p><button>Log out everywhere</button></p></form>`,
    )
  })
  app.get('/account/whoami.json', async (ctx) => {
    const u = currentUser(ctx)
    if (!u) throw new HttpError(401, 'not logged in')
    const s = session(ctx)
    ctx.res.setHeader('cache-control', 'no-store')
    await json(ctx, 200, { service: 'account', instance, userId: u.id, session: s.idHash })
  })

  const server = await app.listen(port)
  return {
    server,
    close: async () => {
      for (const c of env.closers.reverse()) await c()
    },
  }
}

// A valid scrypt hash of a random password, computed once at start.
const DUMMY_HASH = await hashPassword(Math.random().toString(36))
