//! The WebDriver harness the page tests use (tests/common/browser.rs), checked on its own: a
//! headless Chromium at a phone's width clicks, types, runs script and takes a screenshot.

mod common;

use std::time::Duration;

use common::browser::Browser;

#[tokio::test]
async fn a_headless_chromium_at_a_phones_width_clicks_types_and_reports() {
    let browser = Browser::start(390, 844).await.unwrap();
    let page = "data:text/html,<meta name=viewport content='width=device-width'>\
        <label>Name <input id=name></label>\
        <button id=go onclick=\"document.querySelector('%23out').textContent='hello '+document.querySelector('%23name').value\">Go</button>\
        <p id=out></p>";
    browser.goto(page).await.unwrap();
    assert_eq!(browser.eval("return window.innerWidth").await.unwrap(), 390);
    browser
        .find("#name")
        .await
        .unwrap()
        .type_text("Ada")
        .await
        .unwrap();
    browser.find("#go").await.unwrap().click().await.unwrap();
    let out = browser
        .wait_until(
            "return document.querySelector('#out').textContent",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(out, "hello Ada");
    assert_eq!(
        browser.find("#out").await.unwrap().text().await.unwrap(),
        "hello Ada"
    );
    assert!(browser.find_all("#missing").await.unwrap().is_empty());
    let shot = std::env::temp_dir().join(format!("browser-{}.png", uuid::Uuid::new_v4()));
    browser.screenshot(&shot).await.unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    std::fs::remove_file(&shot).unwrap();
    browser.quit().await.unwrap();
}
