/** `4runr config check FILE`: load, validate and compile a config file without serving it. */
import { compileConfig } from '../config/compile.ts'
import { ConfigError, loadConfigFile } from '../config/load.ts'

/** Check `file`; prints `FILE: ok` and returns 0, or prints every problem (one a line) and returns 1. */
export async function configCheck(
  file: string,
  out: { log(s: string): void; error(s: string): void },
): Promise<number> {
  try {
    const { config, text } = await loadConfigFile(file)
    // Compiling resolves references (a channel's system, duplicate prefixes) that the schema
    // alone cannot see; demo systems keep their placeholder origin here.
    compileConfig(config, text)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    // Compile problems carry no file name; re-wrapping names it on every line.
    for (const line of new ConfigError(err.problems, file).message.split('\n')) out.error(line)
    return 1
  }
  out.log(`${file}: ok`)
  return 0
}
