#!/usr/bin/env node
// One port for the whole embedded cloud (LocalStack's 4566): every request goes to the emulator of its service.
//   node router.js --port 4566 [--host 127.0.0.1] --route dynamodb=127.0.0.1:4567 --route kinesis=... \
//        --route s3=... --default 127.0.0.1:4570 [--watch-stdin]
// The service is read from the SigV4 credential scope (`Credential=<key>/<date>/<region>/<service>/aws4_request`
// in the Authorization header, or the X-Amz-Credential query parameter of a presigned URL), else from X-Amz-Target;
// an unsigned request is S3's (browsers, presigned SigV2 URLs). Services without a route go to --default (moto).
// Bodies stream both ways; upstream connections are kept alive. GET /_localstack/health answers here.
'use strict'

const http = require('http')

function parseArgs(argv) {
  const out = { route: [] }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (!arg.startsWith('--')) continue
    const key = arg.slice(2)
    const value = i + 1 < argv.length && !argv[i + 1].startsWith('--') ? argv[++i] : true
    if (key === 'route') out.route.push(value)
    else out[key] = value
  }
  return out
}

function target(spec) {
  const at = spec.lastIndexOf(':')
  return { host: spec.slice(0, at), port: Number(spec.slice(at + 1)) }
}

const args = parseArgs(process.argv.slice(2))
const routes = {}
for (const spec of args.route) {
  const eq = spec.indexOf('=')
  routes[spec.slice(0, eq)] = target(spec.slice(eq + 1))
}
const fallback = args.default ? target(args.default) : null
// Idle upstream sockets are closed after 60 s, before the emulators' own 120 s keep-alive timeout closes them.
const agent = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, keepAliveMsecs: 1000, timeout: 60000 })

const SCOPE = /Credential=[^/,\s]*\/\d{8}\/[^/]+\/([^/]+)\/aws4_request/
const QUERY_SCOPE = /[?&]X-Amz-Credential=[^/&]*(?:\/|%2F)\d{8}(?:\/|%2F)[^/&%]+(?:\/|%2F)([^/&%]+)(?:\/|%2F)aws4_request/i
const TARGETS = [[/^DynamoDB_/, 'dynamodb'], [/^DynamoDBStreams_/, 'dynamodbstreams'], [/^Kinesis_/, 'kinesis'],
  [/^AmazonSQS\./, 'sqs']]

function serviceOf(req) {
  const auth = req.headers.authorization
  if (auth) {
    const match = SCOPE.exec(auth)
    if (match) return match[1]
    if (auth.startsWith('AWS ')) return 's3' // SigV2, S3's
  }
  if (req.url.includes('X-Amz-Credential')) {
    const match = QUERY_SCOPE.exec(req.url)
    if (match) return match[1]
  }
  const amzTarget = req.headers['x-amz-target']
  if (amzTarget) {
    for (const [pattern, service] of TARGETS) if (pattern.test(amzTarget)) return service
    return 'other'
  }
  return 's3'
}

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'expect', 'te', 'trailer'])

function strip(headers) {
  const out = {}
  for (const key of Object.keys(headers)) if (!HOP.has(key)) out[key] = headers[key]
  return out
}

function health(res) {
  const services = {}
  for (const name of Object.keys(routes)) services[name] = 'running'
  services.other = fallback ? 'running' : 'missing'
  const body = JSON.stringify({ services, edition: 'rtrec-embedded', routes, default: fallback })
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/_localstack/health') || req.url.startsWith('/_rtrec/health')) return health(res)
  const service = serviceOf(req)
  const upstream = routes[service] || fallback
  if (!upstream) {
    res.writeHead(501, { 'content-type': 'text/plain' })
    return res.end(`no emulator for service ${service}\n`)
  }
  const proxied = http.request({
    host: upstream.host, port: upstream.port, method: req.method, path: req.url, headers: strip(req.headers), agent,
  }, (upstreamRes) => {
    res.writeHead(upstreamRes.statusCode, upstreamRes.statusMessage, strip(upstreamRes.headers))
    upstreamRes.pipe(res)
    upstreamRes.on('error', () => res.destroy())
  })
  proxied.on('error', (err) => {
    // The emulator is down (being restarted by the supervisor): 503, which the SDKs retry.
    if (res.headersSent) return res.destroy()
    const body = `emulator for ${service} at ${upstream.host}:${upstream.port} unavailable: ${err.code || err.message}\n`
    res.writeHead(503, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
  req.on('aborted', () => proxied.destroy())
  req.pipe(proxied)
})
server.keepAliveTimeout = 65000
server.headersTimeout = 66000
server.requestTimeout = 0
server.on('error', (err) => { console.error(`router: ${err.message}`); process.exit(1) })
server.listen(Number(args.port || 4566), args.host || '127.0.0.1', () => {
  const address = server.address()
  console.log(`router listening on ${address.address}:${address.port}: ${JSON.stringify(routes)} default ${JSON.stringify(fallback)}`)
})

function stop() {
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 1000).unref()
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
if (args['watch-stdin']) {
  process.stdin.on('end', stop)
  process.stdin.on('error', stop)
  process.stdin.on('close', stop)
  process.stdin.resume()
}
