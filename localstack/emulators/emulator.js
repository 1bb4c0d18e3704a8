#!/usr/bin/env node
// One persistent AWS emulator in this process, for rtrec_local.cloud (the supervisor):
//   node emulator.js dynamodb|kinesis|s3 --port P [--host H] --path DIR [--watch-stdin]
// dynamodb: dynalite on LevelDB, kinesis: kinesalite on LevelDB, s3: s3rver on the file system; no artificial
// latency (tables and streams are ACTIVE at once). With --watch-stdin the process exits when its standard input
// closes, i.e. when the supervisor is gone, even after a SIGKILL of it: no orphan keeps the port.
'use strict'

const fs = require('fs')

function parseArgs(argv) {
  const out = { _: [] }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (!arg.startsWith('--')) { out._.push(arg); continue }
    const key = arg.slice(2)
    if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) out[key] = argv[++i]
    else out[key] = true
  }
  return out
}

const args = parseArgs(process.argv.slice(2))
const service = args._[0]
const port = Number(args.port || 0)
const host = args.host || '127.0.0.1'
const dir = args.path
if (!service || !dir) {
  console.error('usage: node emulator.js dynamodb|kinesis|s3 --port P --path DIR [--host H] [--watch-stdin]')
  process.exit(2)
}
fs.mkdirSync(dir, { recursive: true })

function ready(address) {
  console.log(`${service} listening on ${address.address}:${address.port} (state: ${dir})`)
}

function fatal(err) {
  console.error(`${service}: ${err && err.stack || err}`)
  process.exit(1)
}

// The router keeps its connections open: idle ones are closed by it, not here (no race on a reused socket).
function keepAlive(server) {
  server.keepAliveTimeout = 120000
  server.headersTimeout = 121000
}

let close = (cb) => cb()
if (service === 'dynamodb') {
  const server = require('dynalite')({ path: dir, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 })
  keepAlive(server)
  server.on('error', fatal)
  server.listen(port, host, () => ready(server.address()))
  close = (cb) => server.close(cb)
} else if (service === 'kinesis') {
  const server = require('kinesalite')({
    path: dir, createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: Number(args.shardLimit || 1000),
  })
  keepAlive(server)
  server.on('error', fatal)
  server.listen(port, host, () => ready(server.address()))
  close = (cb) => server.close(cb)
} else if (service === 's3') {
  const S3rver = require('s3rver')
  // Like LocalStack, accept any access key (the SDKs sign with "test"): unknown keys are the built-in account's.
  const AWSAccount = require('s3rver/lib/models/account')
  const knownAccount = AWSAccount.registry.get.bind(AWSAccount.registry)
  AWSAccount.registry.get = (key) => {
    if (key === undefined || knownAccount(key)) return knownAccount(key)
    AWSAccount.DUMMY_ACCOUNT.createKeyPair(key, 'test') // its signatures are not checked (allowMismatchedSignatures)
    return AWSAccount.DUMMY_ACCOUNT
  }
  atomicPutObject(require('s3rver/lib/stores/filesystem'))
  const server = new S3rver({
    port, address: host, directory: dir, silent: true, allowMismatchedSignatures: true, vhostBuckets: false,
  })
  server.run((err, address) => {
    if (err) return fatal(err)
    if (server.httpServer) keepAlive(server.httpServer)
    ready(typeof address === 'object' ? address : { address: host, port })
  })
  close = (cb) => server.close(cb)
} else {
  fatal(`unknown service ${service}`)
}

// s3rver writes an object over its file in place (and answers before a Buffer's write is done): a GET meanwhile
// reads part of it, and a kill -9 mid-write leaves it cut short. S3 replaces an object whole, so write a file beside
// it and rename it over the object (atomic on POSIX). The leftover of a crash is not listed: keys are the files
// ending in "._S3rver_object".
function atomicPutObject(FilesystemStore) {
  const crypto = require('crypto')
  const path = require('path')
  FilesystemStore.prototype.putObject = async function (object) {
    const objectPath = this.getResourcePath(object.bucket, object.key, 'object')
    await fs.promises.mkdir(path.dirname(objectPath), { recursive: true })
    const partial = `${objectPath}.partial-${process.pid}-${crypto.randomBytes(6).toString('hex')}`
    const md5Context = crypto.createHash('md5')
    let size = 0
    try {
      await new Promise((resolve, reject) => {
        const out = fs.createWriteStream(partial)
        out.on('error', reject).on('finish', resolve)
        if (Buffer.isBuffer(object.content)) {
          md5Context.update(object.content)
          size = object.content.length
          out.end(object.content)
        } else {
          object.content.on('error', reject)
            .on('data', (chunk) => { md5Context.update(chunk); size += chunk.length })
            .pipe(out)
        }
      })
      await fs.promises.rename(partial, objectPath)
    } catch (err) {
      await fs.promises.rm(partial, { force: true })
      throw err
    }
    const md5 = md5Context.digest('hex')
    await this.putMetadata(object.bucket, object.key, object.metadata, md5)
    return { size, md5 }
  }
}

let stopping = false
function stop() {
  if (stopping) return
  stopping = true
  const timer = setTimeout(() => process.exit(0), 2000)
  timer.unref()
  try { close(() => process.exit(0)) } catch (e) { process.exit(0) }
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
if (args['watch-stdin']) {
  process.stdin.on('end', stop)
  process.stdin.on('error', stop)
  process.stdin.on('close', stop)
  process.stdin.resume()
}
