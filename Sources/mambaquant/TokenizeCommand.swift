import ArgumentParser
import Foundation
import MambaModel
import MambaTensors

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenize", abstract: "Print the token ids of a text.")

    @Option(help: "Checkpoint directory whose tokenizer.json to use.")
    var model: String?
    @Option(help: "A tokenizer.json file.")
    var tokenizer: String?
    @Option(help: "Text to tokenize.")
    var text: String?
    @Option(help: "File whose text to tokenize.")
    var file: String?
    @Flag(help: "Print {\"ids\": [...]}.")
    var json = false
    @Flag(help: "Add the special tokens of tokenizer.json's post-processor around the text (as generate does for a prompt).")
    var specialTokens = false
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if (model == nil) == (tokenizer == nil) { throw ValidationError("give exactly one of --model and --tokenizer") }
        if (text == nil) == (file == nil) { throw ValidationError("give exactly one of --text and --file") }
    }

    func run() throws {
        let path = tokenizer ?? (model! + "/" + Tokenizer.fileName)
        let tok = try Tokenizer(contentsOf: path)
        let ids = tok.encode(try text ?? readText(file!), addSpecialTokens: specialTokens)
        if json {
            print("{\"ids\": [" + ids.map(String.init).joined(separator: ", ") + "]}")
        } else {
            print(ids.map(String.init).joined(separator: " "))
        }
    }
}
