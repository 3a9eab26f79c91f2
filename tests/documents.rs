//! Inputs people actually have: HTML and PDF files that no one in this
//! project wrote (Debian documentation, see `tests/fixtures/documents`), turned
//! into the text a model reads.

fn document(name: &str) -> Vec<u8> {
    std::fs::read(abridge_tests::fixture(&format!("documents/{name}"))).unwrap()
}

#[test]
fn html_gives_its_readable_text() {
    let html = document("users-and-groups.html");
    assert_eq!(abridge::input::detect(&html), abridge::input::Format::Html);
    let text = abridge::input::extract(&html).unwrap();
    assert!(
        text.starts_with("Users and Groups in the Debian System"),
        "{}",
        &text[..80]
    );
    assert!(text.contains("Joey Hess"));
    assert!(
        text.contains("Copyright © 2001, 2002 Joey Hess"),
        "entities are decoded"
    );
    for markup in ["<P", "</A", "CLASS=", "DOCTYPE", "&copy;"] {
        assert!(!text.contains(markup), "markup {markup:?} left in the text");
    }
}

#[test]
fn pdf_gives_its_text_layer() {
    let pdf = document("libtasn1.pdf");
    assert_eq!(abridge::input::detect(&pdf), abridge::input::Format::Pdf);
    let text = abridge::input::extract(&pdf).unwrap();
    assert!(text.contains("Libtasn1"), "{}", &text[..200]);
    assert!(text.contains("ASN.1"));
    assert!(text.len() > 50_000, "only {} bytes of text", text.len());
}

#[test]
fn a_pdf_without_text_or_encrypted_is_an_error_naming_the_cause() {
    let err = abridge::input::extract(&document("no-text-layer.pdf")).unwrap_err();
    assert!(err.to_string().contains("no text layer"), "{err}");
    let err = abridge::input::extract(&document("libtasn1-encrypted.pdf")).unwrap_err();
    assert!(err.to_string().contains("is encrypted"), "{err}");
}
