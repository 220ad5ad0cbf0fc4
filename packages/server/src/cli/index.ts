#!/usr/bin/env node
/** The `4runr` command: thin wiring from arguments to the commands. */
import { readFileSync } from 'node:fs'
import { Command } from 'commander'
import { configCheck } from './config-check.ts'
import { startCommand } from './start.ts'

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string
}

const program = new Command()
program.name('4runr').description('4Runr Gateway: a secure API gateway for AI agents').version(pkg.version)

program
  .command('start')
  .description('start the gateway')
  .option('-c, --config <file>', 'config file (or RUNR_CONFIG)', process.env['RUNR_CONFIG'] ?? '4runr.yaml')
  .action(async (opts: { config: string }) => {
    process.exitCode = await startCommand(opts.config)
  })

const config = program.command('config').description('work with config files')
config
  .command('check')
  .description('validate a config file and report every problem with its path and line')
  .argument('<file>', 'the config file')
  .action(async (file: string) => {
    process.exitCode = await configCheck(file, {
      log: (s) => process.stdout.write(`${s}\n`),
      error: (s) => process.stderr.write(`${s}\n`),
    })
  })

await program.parseAsync()
