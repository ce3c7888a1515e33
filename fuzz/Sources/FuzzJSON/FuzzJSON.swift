// fuzz-json: JSONCoding's parser, serializer and decoder on hostile text. A document that
// parses must serialize (plain and with sorted keys) to text that parses back to the same
// value; sorted output must be stable. The same bytes are decoded as a Codable type with
// fields of every kind: a refusal must be a DecodingError, and a decoded value must encode
// and decode back to itself.
import FuzzSupport
import JSONCoding

@main
enum JSONFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

/// A type touching every decoding path the product's configuration types use.
private struct Probe: Codable, Equatable {
    enum Kind: String, Codable { case tty = "Tty", off = "Off" }
    enum Choice: Codable, Equatable { case plain, sized(UInt16), named(name: String, [Int8]) }
    var small: UInt8?
    var signed: Int32?
    var big: UInt64?
    var ratio: Double?
    var single: Float?
    var flag: Bool?
    var text: String?
    var kind: Kind?
    var choice: Choice?
    var list: [Int64]?
    var byName: [String: Probe]?
    var byNumber: [Int: String]?
    var nested: [[Probe?]]?
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let bytes = input.rest()
        if let value = try? JSONParser.parse(bytes) {
            guard let plain = try? value.serialized(), let sorted = try? value.serialized(sortedKeys: true) else {
                return fuzzCheck(false, "a parsed document does not serialize")
            }
            let reparsed = try? JSONParser.parse(plain)
            fuzzCheck(reparsed == value, "the document does not survive serialize and parse: \(String(decoding: plain, as: UTF8.self))")
            let sortedAgain = (try? JSONParser.parse(sorted)).flatMap { try? $0.serialized(sortedKeys: true) }
            fuzzCheck(sortedAgain == sorted, "sorted output is not stable: \(String(decoding: sorted, as: UTF8.self))")
        }
        do {
            let probe = try JSONCoding.decode(Probe.self, from: bytes)
            let encoded = try JSONCoding.encode(probe, sortedKeys: true)
            fuzzCheck((try? JSONCoding.decode(Probe.self, from: encoded)) == probe,
                      "a decoded value does not round-trip: \(String(decoding: encoded, as: UTF8.self))")
        } catch is DecodingError {
        } catch {
            fuzzCheck(false, "decoding threw \(error), not a DecodingError")
        }
    }
}

/// Documents of every kind, and Probe values that decode.
private func seeds() -> [[UInt8]] {
    [
        #"{"small":255,"signed":-2147483648,"big":18446744073709551615,"ratio":-1.5e-3,"single":0.1,"flag":true,"text":"a\"\\\/\u00e9\ud83d\ude00\n","kind":"Tty"}"#,
        #"{"choice":{"named":{"name":"x","_1":[1,-128]}},"list":[0,-9223372036854775808],"byNumber":{"1":"a","-2":"b"}}"#,
        #"{"byName":{"a":{"small":1},"b":{}},"nested":[[null,{"choice":{"plain":{}}}],[]],"unknown":[1.0,5e8,{"x":null}]}"#,
        #"[1,2.5,"x",true,false,null,{"a":[]},[[[]]],18446744073709551616,-0]"#,
        #"  "just a string"  "#,
    ].map { Array($0.utf8) }
}
