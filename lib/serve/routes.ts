/**
 * The HTTP API's routes (docs/serve.md documents each; a test keeps the two equal) and the page's
 * files. Every request has already passed the guard (security.ts) when a handler runs.
 */
import type { FastifyInstance } from 'fastify';
import { HttpError } from './errors';
import type { Jobs } from './jobs';
import { listModels } from './models';
import { pageFile } from './page';
import { JOB_REQUEST_SCHEMA, type JobRequest } from './request';
import type { Roots } from './roots';
import { CSP } from './security';
import { EventStreams, parseLastEventId } from './sse';
import { jobSummary, jobView, withReport } from './views';

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;

const ID_PARAMS = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 64 } },
} as const;

interface IdRoute {
  Params: { id: string };
}

export interface RouteDeps {
  readonly jobs: Jobs;
  readonly roots: Roots;
  readonly streams: EventStreams;
  readonly pageDir: string;
}

const JSON_TYPE = 'application/json; charset=utf-8';

export function registerRoutes(app: FastifyInstance, { jobs, roots, streams, pageDir }: RouteDeps): void {
  const found = (id: string) => {
    const row = jobs.get(id);
    if (row === undefined) throw new HttpError(404, 'NOT_FOUND', `no job ${JSON.stringify(id)}`);
    return row;
  };

  app.get('/api/health', async () => ({ ok: true }));

  app.get('/api/models', async () => listModels(roots));

  app.post<{ Body: JobRequest }>(
    '/api/jobs',
    { schema: { body: JOB_REQUEST_SCHEMA } },
    async (req, reply) => {
      const row = await jobs.submit(req.body);
      return reply.code(201).send({ id: row.id, state: row.state });
    },
  );

  app.get<{ Querystring: { limit?: string; before?: string } }>(
    '/api/jobs',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            limit: { type: 'string', pattern: '^[0-9]{1,4}$' },
            before: { type: 'string', minLength: 1, maxLength: 64 },
          },
        },
      },
    },
    async (req) => {
      const limit = req.query.limit === undefined ? DEFAULT_PAGE_SIZE : Number(req.query.limit);
      if (limit < 1 || limit > MAX_PAGE_SIZE)
        throw new HttpError(400, 'BAD_REQUEST', `limit must be 1 to ${MAX_PAGE_SIZE}`);
      if (req.query.before !== undefined) found(req.query.before);
      const page = jobs.list(limit, req.query.before);
      const list = page.jobs.map((row) => jobSummary(row, jobs));
      return { jobs: list, ...(page.more ? { next: list.at(-1)!.id } : {}) };
    },
  );

  app.get<IdRoute>('/api/jobs/:id', { schema: { params: ID_PARAMS } }, async (req, reply) => {
    const row = found(req.params.id);
    const view = jobView(row, jobs);
    return reply.type(JSON_TYPE).send(withReport(view, row.hasReport ? jobs.report(row)?.json : undefined));
  });

  app.delete<IdRoute>('/api/jobs/:id', { schema: { params: ID_PARAMS } }, async (req, reply) => {
    jobs.forget(req.params.id);
    return reply.code(204).send();
  });

  app.post<IdRoute>('/api/jobs/:id/cancel', { schema: { params: ID_PARAMS } }, async (req, reply) => {
    const row = jobs.cancel(req.params.id);
    return reply.code(202).send({ id: row.id, state: row.state });
  });

  app.get<IdRoute>('/api/jobs/:id/events', { schema: { params: ID_PARAMS } }, async (req, reply) => {
    const row = found(req.params.id);
    const after = parseLastEventId(req.headers['last-event-id']);
    const { events, feed } = jobs.replay(row, after);
    reply.hijack();
    streams.serve(reply.raw, events, feed);
  });

  app.get<IdRoute>('/api/jobs/:id/report', { schema: { params: ID_PARAMS } }, async (req, reply) => {
    const report = jobs.report(found(req.params.id));
    if (report === undefined) throw new HttpError(404, 'NOT_FOUND', 'this job has no report (yet)');
    return reply.type(JSON_TYPE).send(report.json);
  });

  app.get<IdRoute>('/api/jobs/:id/picture.svg', { schema: { params: ID_PARAMS } }, async (req, reply) => {
    const picture = jobs.report(found(req.params.id))?.picture;
    if (picture === undefined) throw new HttpError(404, 'NOT_FOUND', 'this job has no picture (yet)');
    return reply.type('image/svg+xml').header('content-security-policy', CSP.picture).send(picture);
  });

  const page = async (name: string | undefined, reply: import('fastify').FastifyReply) => {
    const file = await pageFile(pageDir, name);
    if (file === undefined) throw new HttpError(404, 'NOT_FOUND', `no route GET /${name ?? ''}`);
    return reply
      .type(file.type)
      .header('content-security-policy', CSP.page)
      .header('cache-control', 'no-cache')
      .send(file.body);
  };
  app.get('/', async (_req, reply) => page(undefined, reply));
  // Every other GET that no route above takes: a page file, or a 404 like any unknown route's.
  app.get<{ Params: { '*': string } }>('/*', async (req, reply) => page(req.params['*'], reply));
}
