// js-ipfs daemon in a private network: `jsipfs daemon` cannot read a swarm.key, so this starts
// the same Daemon with libp2p's pre-shared-key connection protector, keyed by
// $IPFS_PATH/swarm.key (the Kubo file format: /key/swarm/psk/1.0.0/, /base16/, 64 hex digits).
// testkit copies it next to the js-ipfs node_modules (e2e/.deps/jsipfs) and runs it with node.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Daemon } from 'ipfs-daemon'
import { createLibp2p } from 'libp2p'
import { preSharedKey } from 'libp2p/pnet'

const repo = process.env.IPFS_PATH
const psk = readFileSync(join(repo, 'swarm.key'))
const daemon = new Daemon({
  repo,
  preload: { enabled: false },
  libp2p: async ({ libp2pOptions }) =>
    createLibp2p({ ...libp2pOptions, connectionProtector: preSharedKey({ psk }) })
})
await daemon.start()
console.log('Daemon is ready (private network)')
const stop = async () => { await daemon.stop(); process.exit(0) }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
